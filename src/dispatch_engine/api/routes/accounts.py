"""`/v1/accounts` and the account's queue integration."""

from __future__ import annotations

from fastapi import APIRouter, Header, Response, status

from dispatch_engine.api.deps import (
    CONFIG_ROLES,
    ConfigActor,
    ReadActor,
    SessionDep,
    require_account,
)
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.models import new_id
from dispatch_engine.queues.factory import build_sender
from dispatch_engine.schemas.accounts import AccountCreate, AccountOut, AccountPatch
from dispatch_engine.schemas.integrations import IntegrationIn, IntegrationOut, VerifyResult
from dispatch_engine.schemas.queue_message import build_probe, encode_message
from dispatch_engine.services import accounts as service
from dispatch_engine.services import integrations
from dispatch_engine.services.etags import check_if_match, etag
from dispatch_engine.store.accounts import accounts_by_id
from dispatch_engine.store.accounts import get_account as load_account

router = APIRouter(prefix="/v1/accounts")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountOut,
    tags=["accounts"],
    summary="Create an account",
    description=doc(
        """
        EM creates a tenant with the id it chooses (e.g. `acme`: letters, digits, `_`, `.`,
        `-`), its name, and the people to reach during incidents: the owner, admins, and
        optionally a decision maker. The account's **sandbox policy** is created with it.
        Next: set its queue integration, then create policies. Answers 201 with `ETag` and
        `Location`. `backend` and `admin` keys; a backend key limited to one account may
        create only that one (404 for any other id). Audited.
        """
    ),
    responses=problems(
        401, 403, 404, 409, *BODY, notes={409: "`account-exists`: the id is taken."}
    ),
)
async def create_account(
    body: AccountCreate, actor: ConfigActor, session: SessionDep, response: Response
) -> AccountOut:
    """Create an account; its sandbox policy is created with it."""
    require_account(actor.principal, body.id, *CONFIG_ROLES)
    async with session.begin():
        account = await service.create_account(session, body, actor.now(), actor.principal.key_id)
        out = service.account_out(account)
        actor.audit(
            session,
            "account.create",
            "account",
            account.id,
            account_id=account.id,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    response.headers["Location"] = f"/v1/accounts/{out.id}"
    return out


@router.get(
    "",
    response_model=list[AccountOut],
    tags=["accounts"],
    summary="List accounts",
    description="The accounts this key can see, by id, a page at a time: all of them, or "
    "only its own for a backend key limited to one account. Any key.",
    responses=problems(401, 422),
)
async def list_accounts(actor: ReadActor, session: SessionDep, pager: PagerDep) -> list[AccountOut]:
    """Accounts this key can see (a backend key limited to one account sees that one), by id."""
    only = actor.principal.account_id if actor.principal.role == "backend" else None
    async with session.begin():
        accounts, next_cursor = await accounts_by_id(session, pager.page, only)
    pager.next_page(next_cursor)
    return [service.account_out(a) for a in accounts]


@router.get(
    "/{account_id}",
    response_model=AccountOut,
    tags=["accounts"],
    summary="Get an account",
    description="The account with its incident contacts and version; the `ETag` header is "
    "the version to send as `If-Match` when editing it. Any key that can see the account.",
    responses=problems(401, 404, 422),
)
async def get_account(
    account_id: str, actor: ReadActor, session: SessionDep, response: Response
) -> AccountOut:
    async with session.begin():
        out = service.account_out(await load_account(session, account_id))
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch(
    "/{account_id}",
    response_model=AccountOut,
    tags=["accounts"],
    summary="Edit an account",
    description=doc(
        """
        Changes the name or the incident contacts: only the fields sent change (`admins`
        is replaced as a whole; `null` clears `owner` or `decision_maker`). Conditional when
        `If-Match` is sent (412 when stale); the version moves only when something changed.
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 412, *BODY),
)
async def patch_account(
    account_id: str,
    body: AccountPatch,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = Header(default=None),
) -> AccountOut:
    """Edit name and contacts. If-Match is checked when sent."""
    async with session.begin():
        account = await load_account(session, account_id, lock=True)
        check_if_match(if_match, account.version)
        before = service.account_snapshot(account)
        patch = body.model_dump(exclude_unset=True)
        account = await service.patch_account(session, account_id, patch, actor.now())
        out = service.account_out(account)
        actor.audit(
            session,
            "account.update",
            "account",
            account_id,
            account_id=account_id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    return out


@router.put(
    "/{account_id}/queue-integration",
    response_model=IntegrationOut,
    tags=["queue integration"],
    summary="Set the queue integration",
    description=doc(
        """
        Sets (or replaces, as a whole) where the account's messages go: `sqs` (queue URL and
        region; a `.fifo` queue gets group and deduplication ids), `azure_service_bus`
        (connection string, or namespace with Azure AD credentials; a queue or a topic) or
        `local` (kept in the engine, read through `/queue/messages`). Secrets are
        write-only: stored encrypted, never returned, so send them again with every PUT.
        Every host must pass the outgoing-URL rules (422 naming the field), and only an
        admin key may set an SQS `endpoint_url` (403 otherwise). Check it with `…/verify`.
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        *BODY,
        notes={403: "Also a `backend` key setting an SQS `endpoint_url`."},
    ),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "examples": {
                        "local": {
                            "summary": "The embedded local queue",
                            "value": {"kind": "local"},
                        },
                        "sqs": {
                            "summary": "An SQS FIFO queue",
                            "value": {
                                "kind": "sqs",
                                "queue_url": "https://sqs.eu-west-1.amazonaws.com/"
                                "123456789012/invitations.fifo",
                                "region": "eu-west-1",
                                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                            },
                        },
                        "azure_service_bus": {
                            "summary": "An Azure Service Bus queue",
                            "value": {
                                "kind": "azure_service_bus",
                                "connection_string": "Endpoint=sb://acme-invitations."
                                "servicebus.windows.net/;SharedAccessKeyName=send;"
                                "SharedAccessKey=c2VjcmV0",
                                "queue_name": "invitations",
                            },
                        },
                    }
                }
            }
        }
    },
)
async def put_integration(
    account_id: str, body: IntegrationIn, actor: ConfigActor, session: SessionDep
) -> IntegrationOut:
    """Set where the account's messages go. Secrets are write-only and stored encrypted.
    Only an admin key may set an SQS `endpoint_url`; every host must pass the outgoing-URL
    rules (422 naming the field)."""
    async with session.begin():
        integration, before = await integrations.put_integration(
            session,
            account_id,
            body,
            actor.context.cipher,
            actor.now(),
            policy=actor.context.url_policy,
            role=actor.principal.role,
        )
        out = integrations.integration_out(integration)
        actor.audit(
            session,
            "queue_integration.put",
            "queue_integration",
            account_id,
            account_id=account_id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    return out


@router.get(
    "/{account_id}/queue-integration",
    response_model=IntegrationOut,
    tags=["queue integration"],
    summary="Get the queue integration",
    description=doc(
        """
        The integration's kind and non-secret settings (`secret_set` says whether a secret
        is stored), when it was last verified and what went wrong: `verify_error` from the
        last verify, `push_error` while the queue refuses pushes as a whole (credentials,
        rights, a missing queue). 404 until one is set. Any key that can see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def get_integration(account_id: str, actor: ReadActor, session: SessionDep) -> IntegrationOut:
    async with session.begin():
        return integrations.integration_out(await integrations.get_integration(session, account_id))


@router.post(
    "/{account_id}/queue-integration/verify",
    response_model=VerifyResult,
    tags=["queue integration"],
    summary="Verify the queue integration",
    description=doc(
        """
        Sends one probe message (`type: "probe"`; vendors ignore it) through the integration
        and reports what the queue said: 200 with `ok: true`, or `ok: false` and the
        provider's reason in plain words. A success stamps `verified_at` and clears an
        earlier `push_error`. Any key that can see the account. Audited.
        """
    ),
    responses=problems(401, 404, 422),
)
async def verify_integration(
    account_id: str, actor: ReadActor, session: SessionDep
) -> VerifyResult:
    """Send a probe message through the integration and report what the queue said."""
    async with session.begin():
        integration = await integrations.get_integration(session, account_id)
        session.expunge(integration)
    now = actor.now()
    probe = build_probe(message_id=new_id("probe"), account=account_id, sent_at=now)
    error: str | None = None
    sender = build_sender(actor.context, integration)
    if sender is None:
        error = f"queue kind '{integration.kind}' has no sender"
    else:
        try:
            await sender.probe(encode_message(probe), probe.message_id)
        except Exception as exc:  # the provider's reason, in plain words, for the caller
            error = plain_error(exc)
        finally:
            await sender.aclose()
    async with session.begin():
        stored = await integrations.get_integration(session, account_id)
        stored.verified_at = now if error is None else stored.verified_at
        stored.verify_error = error
        if error is None:  # the queue takes messages again: an earlier refusal is history
            stored.push_error = stored.push_error_at = None
        actor.audit(
            session,
            "queue_integration.verify",
            "queue_integration",
            account_id,
            account_id=account_id,
            after={"ok": error is None, "error": error},
        )
        verified_at = stored.verified_at
    return VerifyResult(
        ok=error is None,
        kind=integration.kind,
        message_id=probe.message_id,
        verified_at=verified_at,
        error=error,
    )


def plain_error(exc: Exception) -> str:
    """A sender's reason when it gives one; otherwise the error's type, never its details."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else f"{type(exc).__name__}: the queue refused the probe"
