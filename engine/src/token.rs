//! API credentials: `passerelle token issue` prints a bearer token once; only its SHA-256 is
//! stored. Tokens look like `psl_<id>_<secret>` so a leaked one is easy to find and revoke.
//!
//! A token is also an OAuth2 client (client credentials grant, `POST /api/oauth/token`):
//! `client_id` is its id, `client_secret` the token itself. The access tokens given for it,
//! `psa_...`, are sealed with the data dir's key (nothing stored), expire after
//! [`ACCESS_LIFETIME`] and die with the client token when it is revoked.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::SqliteConnection;

use crate::crypto::Cipher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub scopes: Vec<String>,
}

pub struct Issued {
    pub token: String,
    pub id: String,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub async fn issue(conn: &mut SqliteConnection, name: &str, scopes: &[String]) -> Result<Issued> {
    if name.trim().is_empty() {
        bail!("a token needs a name (who or what uses it)");
    }
    let id = hex(&rand::random::<[u8; 6]>());
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let scopes = if scopes.is_empty() {
        vec!["admin".to_string()]
    } else {
        scopes.to_vec()
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, secret_hash, name, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(hash(&secret))
    .bind(name)
    .bind(scopes.join(" "))
    .bind(crate::journal::now_micros())
    .execute(&mut *conn)
    .await
    .context("storing the token")?;
    Ok(Issued {
        token: format!("psl_{id}_{secret}"),
        id,
    })
}

pub async fn revoke(conn: &mut SqliteConnection, id: &str) -> Result<bool> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(crate::journal::now_micros())
            .bind(id)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// How long an OAuth2 access token is good for.
pub const ACCESS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// Binds the sealed access tokens to their use: a sealed journal payload is no token.
const ACCESS_AAD: &[u8] = b"passerelle oauth2 access token";

/// An access token for `client` (a verified token's principal) with `scopes`, good until
/// `expires` (Unix seconds).
pub fn access_token(
    cipher: &Cipher,
    client: &Principal,
    scopes: &[String],
    expires: i64,
) -> String {
    let claims = serde_json::json!({
        "client": client.token_id,
        "name": client.name,
        "scopes": scopes,
        "expires": expires,
    });
    let sealed = cipher.seal(claims.to_string().as_bytes(), ACCESS_AAD);
    format!("psa_{}", URL_SAFE_NO_PAD.encode(sealed))
}

/// Checks a bearer token: an issued one against the stored hashes, an access token by its
/// seal, its expiry and its client token still being active.
pub async fn verify(
    pool: &sqlx::SqlitePool,
    cipher: &Cipher,
    token: &str,
) -> Result<Option<Principal>> {
    if let Some(sealed) = token.strip_prefix("psa_") {
        return verify_access(pool, cipher, sealed).await;
    }
    let Some(rest) = token.strip_prefix("psl_") else {
        return Ok(None);
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return Ok(None);
    };
    let row: Option<(Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT secret_hash, name, scopes FROM api_tokens WHERE id = ? AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((stored, name, scopes)) = row else {
        return Ok(None);
    };
    if !constant_time_eq(&stored, &hash(secret)) {
        return Ok(None);
    }
    Ok(Some(Principal {
        token_id: id.to_string(),
        name,
        scopes: scopes.split_whitespace().map(String::from).collect(),
    }))
}

async fn verify_access(
    pool: &sqlx::SqlitePool,
    cipher: &Cipher,
    sealed: &str,
) -> Result<Option<Principal>> {
    let claims = URL_SAFE_NO_PAD
        .decode(sealed)
        .ok()
        .and_then(|blob| cipher.open(&blob, ACCESS_AAD).ok())
        .and_then(|plain| serde_json::from_slice::<serde_json::Value>(&plain).ok());
    let Some(claims) = claims else {
        return Ok(None);
    };
    let now = crate::journal::now_micros() / 1_000_000;
    let (Some(client), Some(expires)) = (claims["client"].as_str(), claims["expires"].as_i64())
    else {
        return Ok(None);
    };
    if expires <= now {
        return Ok(None);
    }
    let active: Option<(String,)> =
        sqlx::query_as("SELECT id FROM api_tokens WHERE id = ? AND revoked_at IS NULL")
            .bind(client)
            .fetch_optional(pool)
            .await?;
    if active.is_none() {
        return Ok(None);
    }
    Ok(Some(Principal {
        token_id: client.to_string(),
        name: format!("{} (OAuth2)", claims["name"].as_str().unwrap_or(client)),
        scopes: claims["scopes"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
