"""Every domain's models, imported once so Alembic and create_all see one metadata."""

from .audit.models import AuditEvent  # noqa: F401

from .agreements.models import Agreement, Membership, Product, Role  # noqa: F401
from .clients.models import Client, ClientOwner, InitialAccessToken  # noqa: F401
from .grants.models import AccessToken, Grant, LogoutDelivery, RefreshToken, TokenFamily  # noqa: F401
from .identities.models import Identity, RecoveryCode, SecondFactor  # noqa: F401
from .invitations.models import Invitation  # noqa: F401
from .legacy_users.models import LegacyUser  # noqa: F401
from .storage.db import Base  # noqa: F401
from .storage.ephemeral import EphemeralEntry  # noqa: F401

metadata = Base.metadata
