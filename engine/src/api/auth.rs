//! Bearer tokens on `/api`. Verified tokens are cached briefly so a busy console does not
//! hit the database on every call; a revoked token stops working within [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, error};
use crate::token::{Principal, verify};

const TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TokenCache {
    async fn check(
        &self,
        pool: &sqlx::SqlitePool,
        cipher: &crate::crypto::Cipher,
        token: &str,
    ) -> anyhow::Result<Option<Principal>> {
        if let Some((p, at)) = self.entries.lock().expect("token cache").get(token)
            && at.elapsed() < TTL
        {
            return Ok(Some(p.clone()));
        }
        let found = verify(pool, cipher, token).await?;
        if let Some(p) = &found {
            let mut entries = self.entries.lock().expect("token cache");
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            entries.insert(token.to_string(), (p.clone(), Instant::now()));
        }
        Ok(found)
    }
}

/// Why a request carries no usable identity, and the status that says so.
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

/// The principal of a request's bearer token.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let refuse = |status, message: &str| Refusal {
        status,
        message: message.to_string(),
    };
    let Some(token) = token else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (passerelle token issue)",
        ));
    };
    match state
        .tokens
        .check(
            state.runtime.journal().reader(),
            state.runtime.journal().cipher(),
            token,
        )
        .await
    {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(refuse(StatusCode::UNAUTHORIZED, "unknown or revoked token")),
        Err(e) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot check the token: {e}"),
        )),
    }
}

/// A 401 says how to authenticate.
pub fn challenge(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(r) => challenge(error(r.status, r.message)),
    }
}
