"""Sign-up, log-in and log-out. Tokens are opaque; only their keyed digest is stored."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from alle import repository
from alle.api.deps import ConnDep, ServicesDep, SessionDep, UserDep, session_key
from alle.api.schemas import Credentials, TokenOut, UserOut
from alle.security import hash_password, new_session_token, token_digest, verify_password

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED)
def signup(body: Credentials, conn: ConnDep) -> UserOut:
    try:
        user = repository.create_user(conn, email=body.email, password_hash=hash_password(body.password))
    except repository.EmailTakenError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, "An account with this email exists; log in instead.") from error
    return UserOut(**user)


@router.post("/auth/login")
def login(body: Credentials, conn: ConnDep, services: ServicesDep) -> TokenOut:
    user = repository.get_user_by_email(conn, email=body.email)
    if user is None or not verify_password(body.password, user["password_hash"]):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Email or password is wrong.")
    token = new_session_token()
    digest = token_digest(token, services.settings.SECRET_KEY)
    ttl = services.settings.SESSION_TTL_SECONDS
    repository.create_session(conn, token_hash=digest, user_id=user["id"], ttl_seconds=ttl)
    services.cache.set(session_key(digest), str(user["id"]))
    return TokenOut(access_token=token, expires_in=ttl)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(session: SessionDep, conn: ConnDep, services: ServicesDep) -> None:
    repository.delete_session(conn, token_hash=session.digest)
    services.cache.delete(session_key(session.digest))


@router.get("/users/me")
def me(user_id: UserDep, conn: ConnDep) -> UserOut:
    row = repository.get_user(conn, user_id=user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The account no longer exists.")
    return UserOut(**row)
