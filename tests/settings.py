"""Settings for the test run: the gateway's own, with a throwaway SECRET_KEY.

The environment is set before the real settings load, exactly as an operator's
would be; a real deployment must set SECRET_KEY (the settings refuse to start).
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("GATEWAY_IGNORE_DOTENV", "1")

from gateway_project.settings import *  # noqa: F403 - the settings under test
