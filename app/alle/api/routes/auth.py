"""Sign-up, log-in and log-out. Tokens are opaque; only their keyed digest is stored."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from alle import repository
from alle.api.deps import ServicesDep, SessionDep, UserDep
from alle.api.schemas import Credentials, TokenOut, UserOut
from alle.cache import session_key
from alle.security import hash_password, new_session_token, verify_password

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED)
async def signup(body: Credentials, services: ServicesDep) -> UserOut:
    password_hash = await services.offload(hash_password, body.password)
    try:
        async with services.pool.connection() as conn:
            user = await repository.create_user(conn, email=body.email, password_hash=password_hash)
    except repository.EmailTakenError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, "An account with this email exists; log in instead.") from error
    return UserOut(**user)


@router.post("/auth/login")
async def login(body: Credentials, services: ServicesDep) -> TokenOut:
    async with services.pool.connection() as conn:
        user = await repository.get_user_by_email(conn, email=body.email)
    if user is None or not await services.offload(verify_password, body.password, user["password_hash"]):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Email or password is wrong.")
    token = new_session_token()
    digest = services.digest(token)
    ttl = services.settings.SESSION_TTL_SECONDS
    async with services.pool.connection() as conn:
        await repository.create_session(conn, token_hash=digest, user_id=user["id"], ttl_seconds=ttl)
    await services.cache.set_raw(session_key(digest), str(user["id"]))
    return TokenOut(access_token=token, expires_in=ttl)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(session: SessionDep, services: ServicesDep) -> None:
    async with services.pool.connection() as conn:
        await repository.delete_session(conn, token_hash=session.digest)
    await services.cache.delete(session_key(session.digest))


@router.get("/users/me")
async def me(user_id: UserDep, services: ServicesDep) -> UserOut:
    async with services.pool.connection() as conn:
        row = await repository.get_user(conn, user_id=user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The account no longer exists.")
    return UserOut(**row)
