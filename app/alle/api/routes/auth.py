"""Sign-up, log-in and log-out. Tokens are opaque; only their keyed digest is stored.

Sign-up gives the same answer whether the email was free or taken (a taken account keeps its password), and
log-in verifies a password hash for unknown emails too, so neither answer alone tells which emails have accounts.
Together they still do: a log-in with the password a sign-up just sent works only where the email was free.
Closing that needs sign-up confirmed by mail (app/README.md, "Login"); both routes are throttled per address.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel

from alle import repository
from alle.api.deps import CallerDep, ServicesDep, SessionDep, SessionRoute, cache_session
from alle.api.errors import answers, invalid
from alle.api.schemas import Credentials, SignUp, TokenOut, UserOut
from alle.cache import session_key
from alle.security import hash_password, new_session_token, password_problem, verify_password

router = APIRouter(prefix="/v1", tags=["auth"], responses=answers(503), route_class=SessionRoute)

SIGNED_UP = "Signed up: log in with this email and password. An email that already had an account keeps its password."


class SignupOut(BaseModel):
    """The same for a new account and a taken email, so its answer alone does not tell who has an account (a log-in
    with the password just sent still does: app/README.md, "Login")."""

    email: str
    detail: str


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED, responses=answers(400, 413, 422, 429))
async def signup(body: SignUp, request: Request, services: ServicesDep) -> SignupOut:
    # Each sign-up costs an Argon2id hash: counted with the address's log-in attempts, not left to the edge alone.
    await services.throttle.hit_address(request.client.host if request.client else "unknown")
    if (problem := password_problem(body.password, email=body.email)) is not None:
        raise invalid(["body", "password"], problem)
    password_hash = await services.offload(hash_password, body.password)
    try:
        async with services.pool.connection() as conn:
            await repository.create_user(conn, email=body.email, password_hash=password_hash)
    except repository.EmailTakenError:
        pass  # Same answer, same work (the hash above): see the module docstring.
    return SignupOut(email=body.email, detail=SIGNED_UP)


@router.post("/auth/login", responses=answers(400, 401, 413, 422, 429))
async def login(body: Credentials, request: Request, services: ServicesDep) -> TokenOut:
    address = request.client.host if request.client else "unknown"
    await services.throttle.hit_address(address)
    async with services.pool.connection() as conn:
        compared, user = await repository.find_login(conn, email=body.email)
    # Counted against the email as PostgreSQL compares it, known or not: keyed by Python's casefold(), each spelling
    # of an account's email (`İ`) had an allowance of its own, and keyed by the account only when one exists, the
    # counts told a stranger which emails have accounts.
    await services.throttle.hit_account(compared, address)
    known_hash = None if user is None else user["password_hash"]
    if not await services.offload(verify_password, body.password, known_hash) or user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Email or password is wrong.", headers={"WWW-Authenticate": "Bearer"}
        )
    token = new_session_token()
    digest = services.digest(token)
    ttl = services.settings.SESSION_TTL_SECONDS
    lease = services.cache.lease()  # nobody else knows the token yet, so nothing can invalidate it meanwhile
    async with services.pool.connection() as conn:
        expires_at = await repository.create_session(conn, token_hash=digest, user_id=user["id"], ttl_seconds=ttl)
    await cache_session(services, digest, user["id"], expires_at, lease)
    return TokenOut(access_token=token, expires_in=ttl)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=answers(401, 413))
async def logout(session: SessionDep, services: ServicesDep) -> None:
    async with services.pool.connection() as conn:
        await repository.delete_session(conn, token_hash=session.digest)
    await services.cache.delete(session_key(session.digest))


@router.get("/users/me", responses=answers(401, 404))
async def me(caller: CallerDep) -> UserOut:
    async with caller.services.pool.connection() as conn:
        row = await repository.get_user(conn, user_id=caller.user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The account no longer exists.")
    return UserOut(**row)
