//! Account keys: generate ed25519 keys and keep them in PKCS#8 PEM files,
//! the format `openssl genpkey -algorithm ed25519` writes and reads.
//!
//! A key file is `-----BEGIN PRIVATE KEY-----` (PKCS#8 v1, as OpenSSL
//! writes), or `-----BEGIN ENCRYPTED PRIVATE KEY-----` when saved with a
//! password (PBES2: scrypt with N = 2^14, r = 8, p = 1, the parameters
//! `openssl pkcs8 -scrypt` uses, and AES-256-CBC). Secrets never appear in
//! `Debug` output or error messages; files are created readable by their owner only.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey, KeypairBytes};
use pkcs8::der::pem::PemLabel;
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::{EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument};
use std::path::{Path, PathBuf};
use trellis_types::{KeyPair, PublicKey};

/// What went wrong with a key or a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Saving would replace a file that exists.
    #[error("key file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// Not a PEM-encoded PKCS#8 private key.
    #[error("not a PKCS#8 PEM private key: {0}")]
    Malformed(String),
    /// A PKCS#8 key for another algorithm than ed25519.
    #[error("the key is not an ed25519 key (algorithm {0})")]
    NotEd25519(String),
    /// The file is password-protected and no password was given.
    #[error("the key file is encrypted: a password is needed")]
    PasswordNeeded,
    /// Decryption failed: the password is wrong or the file is damaged.
    #[error("wrong password, or the encrypted key file is damaged")]
    WrongPassword,
    /// The key could not be encoded or encrypted.
    #[error("could not encode the key: {0}")]
    Encode(String),
}

/// A new random key, from the operating system's random source.
///
/// ```
/// let key = trellis_sdk::keys::generate();
/// println!("account key {}", key.public());
/// ```
pub fn generate() -> KeyPair {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
    KeyPair::from_seed(*seed)
}

/// The key as unencrypted PKCS#8 PEM (`PRIVATE KEY`), as OpenSSL writes it.
///
/// ```
/// let key = trellis_sdk::keys::generate();
/// let pem = trellis_sdk::keys::to_pem(&key).unwrap();
/// assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
/// assert_eq!(trellis_sdk::keys::from_pem(&pem, None).unwrap().public(), key.public());
/// ```
pub fn to_pem(key: &KeyPair) -> Result<Zeroizing<String>, KeyError> {
    der_of(key)?
        .to_pem(PrivateKeyInfo::PEM_LABEL, LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The key as password-protected PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`).
///
/// ```
/// let key = trellis_sdk::keys::generate();
/// let pem = trellis_sdk::keys::to_encrypted_pem(&key, b"correct horse").unwrap();
/// assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
/// let back = trellis_sdk::keys::from_pem(&pem, Some(b"correct horse")).unwrap();
/// assert_eq!(back.public(), key.public());
/// ```
pub fn to_encrypted_pem(key: &KeyPair, password: &[u8]) -> Result<Zeroizing<String>, KeyError> {
    use rand_core::RngCore;
    let der = der_of(key)?;
    let info =
        PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| KeyError::Encode(e.to_string()))?;
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    rand_core::OsRng.fill_bytes(&mut salt);
    rand_core::OsRng.fill_bytes(&mut iv);
    let scrypt = pkcs8::pkcs5::scrypt::Params::new(14, 8, 1, 32)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let params = pkcs8::pkcs5::pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    info.encrypt_with_params(params, password)
        .and_then(|doc| {
            doc.to_pem(EncryptedPrivateKeyInfo::PEM_LABEL, LineEnding::LF)
                .map_err(Into::into)
        })
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Reads a key from PKCS#8 PEM, encrypted (give `password`) or not.
///
/// ```
/// // A key written by `openssl genpkey -algorithm ed25519`.
/// let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIIJPli9iNLnSvFimWVRMYEsxpa2WSgyUelr8nTaT8x+6\n-----END PRIVATE KEY-----\n";
/// let key = trellis_sdk::keys::from_pem(pem, None).unwrap();
/// assert_eq!(key.public().to_hex(), "7e2f6a12c7421c55dab78cc299e72e49d21d9086af98e13347b1c7c59ac31dc1");
/// ```
pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<KeyPair, KeyError> {
    let (label, doc) = SecretDocument::from_pem(pem.trim_start())
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    let der = match label {
        PrivateKeyInfo::PEM_LABEL => doc,
        EncryptedPrivateKeyInfo::PEM_LABEL => {
            let password = password.ok_or(KeyError::PasswordNeeded)?;
            let encrypted = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|e| KeyError::Malformed(e.to_string()))?;
            encrypted
                .decrypt(password)
                .map_err(|_| KeyError::WrongPassword)?
        }
        other => {
            return Err(KeyError::Malformed(format!(
                "PEM label `{other}`; expected `PRIVATE KEY` or `ENCRYPTED PRIVATE KEY`"
            )));
        }
    };
    let info =
        PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| KeyError::Malformed(e.to_string()))?;
    if info.algorithm.oid != ed25519_dalek::pkcs8::ALGORITHM_OID {
        return Err(KeyError::NotEd25519(info.algorithm.oid.to_string()));
    }
    let signing = SigningKey::from_pkcs8_der(der.as_bytes())
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    Ok(KeyPair::from_seed(signing.to_bytes()))
}

/// Reads a key file (see [`from_pem`]).
///
/// ```no_run
/// let key = trellis_sdk::keys::load("ops.pem", None)?;
/// let locked = trellis_sdk::keys::load("ops.enc.pem", Some(b"passphrase"))?;
/// # Ok::<(), trellis_sdk::keys::KeyError>(())
/// ```
pub fn load(path: impl AsRef<Path>, password: Option<&[u8]>) -> Result<KeyPair, KeyError> {
    let path = path.as_ref();
    let pem = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?,
    );
    from_pem(&pem, password)
}

/// Writes `key` to a new file (never over an existing one), readable by its
/// owner only, encrypted when a password is given.
///
/// ```no_run
/// let key = trellis_sdk::keys::generate();
/// trellis_sdk::keys::save("ops.pem", &key, None)?;
/// trellis_sdk::keys::save("ops.enc.pem", &key, Some(b"passphrase"))?;
/// # Ok::<(), trellis_sdk::keys::KeyError>(())
/// ```
pub fn save(
    path: impl AsRef<Path>,
    key: &KeyPair,
    password: Option<&[u8]>,
) -> Result<(), KeyError> {
    use std::io::Write;
    let path = path.as_ref();
    let pem = match password {
        Some(password) => to_encrypted_pem(key, password)?,
        None => to_pem(key)?,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The public key as SubjectPublicKeyInfo PEM (`PUBLIC KEY`), for
/// `openssl pkeyutl -verify -pubin -inkey`.
///
/// ```
/// let key = trellis_sdk::keys::generate();
/// let pem = trellis_sdk::keys::public_key_pem(&key.public()).unwrap();
/// assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
/// ```
pub fn public_key_pem(key: &PublicKey) -> Result<String, KeyError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key.0)
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// PKCS#8 v1 (no public key inside), the form OpenSSL writes and every
/// OpenSSL version reads.
fn der_of(key: &KeyPair) -> Result<SecretDocument, KeyError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let bytes = KeypairBytes {
        secret_key: key.seed(),
        public_key: None,
    };
    bytes
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encode(e.to_string()))
}
