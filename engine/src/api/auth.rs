//! Bearer tokens on `/api`. Verified tokens are cached briefly so a busy console does not
//! hit the database on every call; a revoked token stops working within [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
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
        token: &str,
    ) -> anyhow::Result<Option<Principal>> {
        if let Some((p, at)) = self.entries.lock().expect("token cache").get(token)
            && at.elapsed() < TTL
        {
            return Ok(Some(p.clone()));
        }
        let found = verify(pool, token).await?;
        if let Some(p) = &found {
            let mut entries = self.entries.lock().expect("token cache");
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            entries.insert(token.to_string(), (p.clone(), Instant::now()));
        }
        Ok(found)
    }
}

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(String::from);
    let unauthorized = |message: &str| {
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    let Some(token) = token else {
        return unauthorized("a bearer token is required (passerelle token issue)");
    };
    match state
        .tokens
        .check(state.runtime.journal().reader(), &token)
        .await
    {
        Ok(Some(principal)) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(None) => unauthorized("unknown or revoked token"),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the token: {e}"),
        ),
    }
}
