//! API credentials: `passerelle token issue` prints a bearer token once; only its SHA-256 is
//! stored. Tokens look like `psl_<id>_<secret>` so a leaked one is easy to find and revoke.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::SqliteConnection;

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

/// Checks a bearer token against the stored hashes.
pub async fn verify(pool: &sqlx::SqlitePool, token: &str) -> Result<Option<Principal>> {
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
