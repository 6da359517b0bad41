"""/admin/access/applications/{id}/token-issuers[/{issuer_id}]: who signs an application's bearer tokens."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import TokenIssuer
from access.services import token_issuer_create, token_issuer_delete, token_issuer_update
from access.tokens_selectors import token_issuer_get, token_issuer_list
from admin_panel.api.applications import APPLICATION_ID, application_or_404
from admin_panel.api.base import WITH_INPUT, WITH_LOOKUP, AdminAPIView, created, found
from admin_panel.serializers import TokenIssuerSerializer

TAGS = ["access"]
ISSUER_ID = OpenApiParameter("issuer_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Token issuer id.")


def _issuer(application_id: str, issuer_id: str) -> TokenIssuer:
    return found(token_issuer_get(application_or_404(application_id), issuer_id), "token issuer")


@extend_schema(parameters=[APPLICATION_ID])
class TokenIssuerListView(AdminAPIView):
    permission_model = "access.tokenissuer"

    @extend_schema(tags=TAGS, responses={200: TokenIssuerSerializer(many=True), **WITH_LOOKUP})
    def get(self, request: Request, id: str) -> Response:
        """List an application's token issuers."""
        return Response(TokenIssuerSerializer(token_issuer_list(application_or_404(id)), many=True).data)

    @extend_schema(tags=TAGS, request=TokenIssuerSerializer, responses={201: TokenIssuerSerializer, **WITH_INPUT})
    def post(self, request: Request, id: str) -> Response:
        """Trust a token issuer for an application: its tokens call as that application."""
        application = application_or_404(id)
        serializer = TokenIssuerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issuer = token_issuer_create(application=application, actor=request.user, fields=serializer.validated_data)
        data = TokenIssuerSerializer(issuer).data
        return created(request, data, "token-issuer", id=application.id, issuer_id=issuer.id)


@extend_schema(parameters=[APPLICATION_ID, ISSUER_ID])
class TokenIssuerDetailView(AdminAPIView):
    permission_model = "access.tokenissuer"

    @extend_schema(tags=TAGS, responses={200: TokenIssuerSerializer, **WITH_LOOKUP})
    def get(self, request: Request, id: str, issuer_id: str) -> Response:
        """Show one token issuer."""
        return Response(TokenIssuerSerializer(_issuer(id, issuer_id)).data)

    @extend_schema(tags=TAGS, request=TokenIssuerSerializer, responses={200: TokenIssuerSerializer, **WITH_INPUT})
    def put(self, request: Request, id: str, issuer_id: str) -> Response:
        """Replace a token issuer's fields (fields left out keep their value)."""
        return self._update(request, id, issuer_id, partial=False)

    @extend_schema(
        tags=TAGS,
        request=TokenIssuerSerializer(partial=True),
        responses={200: TokenIssuerSerializer, **WITH_INPUT},
    )
    def patch(self, request: Request, id: str, issuer_id: str) -> Response:
        """Change some fields of a token issuer."""
        return self._update(request, id, issuer_id, partial=True)

    @extend_schema(tags=TAGS, responses={204: None, **WITH_LOOKUP})
    def delete(self, request: Request, id: str, issuer_id: str) -> Response:
        """Stop trusting a token issuer; its tokens are refused on every gateway within a second."""
        token_issuer_delete(issuer=_issuer(id, issuer_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, application_id: str, issuer_id: str, *, partial: bool) -> Response:
        issuer = _issuer(application_id, issuer_id)
        serializer = TokenIssuerSerializer(issuer, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        token_issuer_update(issuer=issuer, actor=request.user, fields=serializer.validated_data)
        return Response(TokenIssuerSerializer(issuer).data)
