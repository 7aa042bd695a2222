//! Encryption at rest for health data (AES-256-GCM).
//!
//! The key comes from `PASSERELLE_KEY` (base64 of 32 bytes) or from `journal.key` in the data
//! dir, created with mode 0600 on first start. It is never written anywhere else, so a copy of
//! the database alone reveals no message content.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ENV: &str = "PASSERELLE_KEY";
pub const KEY_FILE: &str = "journal.key";
const NONCE_LEN: usize = 12;
/// Version byte in front of every sealed blob, so the format can evolve (key rotation).
const FORMAT_V1: u8 = 1;

pub struct Cipher {
    aead: Aes256Gcm,
    mac_key: [u8; 32],
    /// Where the key came from, for error messages (never the key itself).
    origin: String,
}

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Self {
        // The content digest uses a key derived from, not equal to, the encryption key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(b"passerelle content digest");
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            aead: Aes256Gcm::new(key.into()),
            mac_key,
            origin: "the key given".into(),
        }
    }

    /// Where the key came from: `PASSERELLE_KEY` or the key file's path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Loads the key from the environment, else from the data dir, else creates it there.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return Ok(Self::from_base64(&text)
                .with_context(|| format!("{KEY_ENV} is not valid"))?
                .with_origin(KEY_ENV));
        }
        let path = data_dir.join(KEY_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(Self::from_base64(&text)
                .with_context(|| format!("{} is not a valid key file", path.display()))?
                .with_origin(path.display().to_string()));
        }
        let key: [u8; 32] = rand::random();
        write_private(&path, STANDARD.encode(key).as_bytes())
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self::from_key(&key).with_origin(format!(
            "{}, created at this start as no key was found",
            path.display()
        )))
    }

    fn from_base64(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| anyhow!("not base64: {e}"))?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the key must be 32 bytes, found {}", bytes.len()))?;
        Ok(Self::from_key(&key))
    }

    /// Encrypts `plain`; `aad` binds the blob to its row so blobs cannot be swapped.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if blob.len() < 1 + NONCE_LEN || blob[0] != FORMAT_V1 {
            bail!("sealed blob has an unknown format");
        }
        let (nonce, sealed) = blob[1..].split_at(NONCE_LEN);
        self.aead
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| anyhow!("decryption failed: wrong key or tampered data"))
    }

    /// Keyed digest of a payload: lets the journal recognise a retransmitted message without
    /// keeping any clear-text fingerprint of health data.
    pub fn digest(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes()[..16].to_vec()
    }
}

/// The FHIR store seals resource payloads with the same key as the journal.
impl passerelle_fhir::Sealer for Cipher {
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        Cipher::seal(self, plain, aad)
    }

    fn open(&self, blob: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        Cipher::open(self, blob, aad)
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let c = Cipher::from_key(&[7u8; 32]);
        let blob = c.seal(b"PID|1||123", b"row-1");
        assert!(!blob.windows(3).any(|w| w == b"PID"), "plaintext leaked");
        assert_eq!(c.open(&blob, b"row-1").unwrap(), b"PID|1||123");
        assert!(
            c.open(&blob, b"row-2").is_err(),
            "blob moved to another row must not open"
        );
        let other = Cipher::from_key(&[8u8; 32]);
        assert!(other.open(&blob, b"row-1").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY-free: the test does not set PASSERELLE_KEY; skip if the environment does.
        if std::env::var(KEY_ENV).is_ok() {
            return;
        }
        let a = Cipher::load_or_create(dir.path()).unwrap();
        let blob = a.seal(b"x", b"");
        let b = Cipher::load_or_create(dir.path()).unwrap();
        assert_eq!(b.open(&blob, b"").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(a.digest(b"m"), b.digest(b"m"));
        assert_ne!(a.digest(b"m"), a.digest(b"n"));
    }
}
