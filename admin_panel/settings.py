"""Settings of the admin panel process: the gateway's, with the admin UI's URLs."""

from gateway_project.settings import *  # noqa: F403 - one set of settings, another URLconf

ROOT_URLCONF = "admin_panel.urls"
