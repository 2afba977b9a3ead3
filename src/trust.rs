//! Trust: signing keys, signatures and the trust store, in minisign's formats (keys and signatures interoperate with the
//! `minisign` CLI both ways). The signed message is the bundle index member, which
//! commits to every member's digest and size; see bundle-format/SPEC.md §6.
//!
//! Passwords are always passed in explicitly: the minisign crate would otherwise prompt
//! on stdout, and the library never prints.

use archpack_format::exit;
use archpack_format::{GateRefusal, IndexGate, IndexSigner};
use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use std::io::Cursor;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a minisign {what}: {detail}")]
    KeyFormat {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{0}: wrong password for this secret key")]
    WrongPassword(PathBuf),
    #[error("{0}: the secret key is password-protected; give --password-file FILE or set ARCHPACK_PASSWORD (or run on a terminal to be asked)")]
    PasswordNeeded(PathBuf),
    #[error("keygen needs a password for the secret key: give --password-file FILE, set ARCHPACK_PASSWORD, run on a terminal, or pass --no-password for a throwaway key")]
    NoPasswordGiven,
    #[error("the two passwords differ")]
    PasswordMismatch,
    #[error("reading the password {from}: {error}")]
    PasswordRead { from: String, error: std::io::Error },
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("generating a key: {0}")]
    Generate(String),
    #[error("signing: {0}")]
    Sign(String),
    #[error(
        "the bundle is not signed; pass --allow-unsigned to accept it anyway (not recommended)"
    )]
    Unsigned,
    #[error("the bundle is signed by key {key_id}, which is not trusted here; trusted keys are read from --trust FILE and *.pub in {searched} ({count} keys found)")]
    Untrusted {
        key_id: String,
        searched: String,
        count: usize,
    },
    #[error("bad signature: archpack-index.json.minisig by key {key_id} does not match archpack-index.json ({detail}); the index was modified or the signature is damaged")]
    BadSignature { key_id: String, detail: String },
    #[error(
        "archpack-index.json.minisig is not a minisign signature ({0}); the signature is damaged"
    )]
    MalformedSignature(String),
}

impl TrustError {
    pub fn exit_code(&self) -> u8 {
        match self {
            TrustError::Unsigned
            | TrustError::Untrusted { .. }
            | TrustError::BadSignature { .. }
            | TrustError::MalformedSignature(_) => exit::UNTRUSTED,
            TrustError::Io { .. }
            | TrustError::KeyFormat { .. }
            | TrustError::WrongPassword(_)
            | TrustError::PasswordNeeded(_)
            | TrustError::NoPasswordGiven
            | TrustError::PasswordMismatch
            | TrustError::PasswordRead { .. }
            | TrustError::Exists(_)
            | TrustError::Generate(_)
            | TrustError::Sign(_) => exit::FAILURE,
        }
    }
}

impl GateRefusal for TrustError {
    fn exit_code(&self) -> u8 {
        TrustError::exit_code(self)
    }
}

fn read_key_file(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|error| TrustError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// minisign's key ID: the key number as a 16-digit hex word.
pub fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// A secret key ready to sign.
pub struct SigningKey {
    secret: SecretKey,
    pub key_id: String,
}

impl SigningKey {
    /// Loads a minisign secret key; `password` is needed when the key is encrypted.
    pub fn load(path: &Path, password: Option<String>) -> Result<SigningKey, TrustError> {
        let text = read_key_file(path)?;
        let bad = |detail: String| TrustError::KeyFormat {
            path: path.to_path_buf(),
            what: "secret key",
            detail,
        };
        let sk_box = SecretKeyBox::from_string(&text).map_err(|e| bad(e.to_string()))?;
        let secret = match sk_box.clone().into_unencrypted_secret_key() {
            Ok(sk) => sk,
            Err(_) if is_unchecksummed_plain_key(&text) => {
                SecretKey::from_bytes(&decode_key_line(&text).unwrap_or_default())
                    .map_err(|e| bad(e.to_string()))?
            }
            Err(_) => {
                let password =
                    password.ok_or_else(|| TrustError::PasswordNeeded(path.to_path_buf()))?;
                sk_box.into_secret_key(Some(password)).map_err(|e| {
                    if e.to_string().contains("Wrong password") {
                        TrustError::WrongPassword(path.to_path_buf())
                    } else {
                        bad(e.to_string())
                    }
                })?
            }
        };
        let key_id = key_id(secret.keynum());
        Ok(SigningKey { secret, key_id })
    }

    /// Whether the key file needs a password (so the CLI knows to ask for one).
    pub fn needs_password(path: &Path) -> Result<bool, TrustError> {
        let text = read_key_file(path)?;
        let sk_box = SecretKeyBox::from_string(&text).map_err(|e| TrustError::KeyFormat {
            path: path.to_path_buf(),
            what: "secret key",
            detail: e.to_string(),
        })?;
        Ok(sk_box.into_unencrypted_secret_key().is_err() && !is_unchecksummed_plain_key(&text))
    }
}

/// Offsets in a minisign secret key blob: algorithms (6), salt and limits (48),
/// key number (8), secret key (64), checksum (32).
const SK_KDF_ALG: std::ops::Range<usize> = 2..4;
const SK_CHECKSUM: std::ops::Range<usize> = 126..158;

fn decode_key_line(text: &str) -> Option<Vec<u8>> {
    use ct_codecs::{Base64, Decoder};
    let line = text.lines().nth(1)?.trim();
    Base64::decode_to_vec(line, None).ok()
}

/// `minisign -G -W` (0.11) writes unencrypted keys with an all-zero checksum, which
/// the minisign CLI accepts and the minisign crate rejects as corrupt. Only that exact
/// shape (no KDF, zero checksum) is let through, so real corruption is still caught.
fn is_unchecksummed_plain_key(text: &str) -> bool {
    decode_key_line(text).is_some_and(|b| {
        b.len() == SK_CHECKSUM.end
            && b[SK_KDF_ALG] == [0, 0]
            && b[SK_CHECKSUM].iter().all(|&x| x == 0)
    })
}

impl IndexSigner for SigningKey {
    fn sign(
        &self,
        data: &[u8],
        trusted_comment: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let untrusted = format!("signature from archpack secret key {}", self.key_id);
        minisign::sign(
            None,
            &self.secret,
            Cursor::new(data),
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|sig| sig.into_string())
        .map_err(|e| Box::new(TrustError::Sign(e.to_string())) as _)
    }
}

/// Paths written by [`keygen`].
pub struct KeyFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub key_id: String,
}

/// Writes `PREFIX.key` (mode 0600; encrypted unless `password` is None) and `PREFIX.pub`.
pub fn keygen(
    prefix: &Path,
    password: Option<String>,
    force: bool,
) -> Result<KeyFiles, TrustError> {
    let secret_path = with_suffix(prefix, "key");
    let public_path = with_suffix(prefix, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() && !force {
            return Err(TrustError::Exists(p.clone()));
        }
    }
    let pair = match password {
        Some(pw) => KeyPair::generate_encrypted_keypair(Some(pw)),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| TrustError::Generate(e.to_string()))?;
    let key_id = key_id(pair.pk.keynum());
    let sk_text = pair
        .sk
        .to_box(Some(&format!("archpack secret key {key_id}")))
        .map_err(|e| TrustError::Generate(e.to_string()))?
        .into_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(|e| TrustError::Generate(e.to_string()))?
        .into_string();
    write_atomic(&secret_path, sk_text.as_bytes(), 0o600)?;
    write_atomic(&public_path, pk_text.as_bytes(), 0o644)?;
    Ok(KeyFiles {
        secret: secret_path,
        public: public_path,
        key_id,
    })
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TrustError> {
    use crate::fsutil::OutputError;
    // Existence was checked (with --force) before the key pair was generated.
    crate::fsutil::write_bytes(path, bytes, true, mode).map_err(|e| TrustError::Io {
        path: path.to_path_buf(),
        error: match e {
            OutputError::Io { error, .. } => error,
            OutputError::Exists(_) => std::io::ErrorKind::AlreadyExists.into(),
        },
    })
}

/// A trusted public key and where it came from.
pub struct TrustedKey {
    pub key: PublicKey,
    pub key_id: String,
    pub source: PathBuf,
}

/// The keys trusted here: `--trust` files plus `*.pub` in the trust directories.
pub struct TrustStore {
    pub keys: Vec<TrustedKey>,
    pub searched: Vec<PathBuf>,
}

/// The system and user trust directories, in search order.
pub fn default_trust_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/archpack/trust.d")];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        dirs.push(c.join("archpack/trust.d"));
    }
    dirs
}

impl TrustStore {
    pub fn load(explicit: &[PathBuf], dirs: &[PathBuf]) -> Result<TrustStore, TrustError> {
        let mut keys = Vec::new();
        for path in explicit {
            keys.push(read_public_key(path)?);
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            files.sort();
            for f in files {
                keys.push(read_public_key(&f)?);
            }
        }
        Ok(TrustStore {
            keys,
            searched: dirs.to_vec(),
        })
    }

    fn find(&self, keynum: &[u8]) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key.keynum() == keynum)
    }
}

/// Reads a minisign public key file (`untrusted comment:` line + base64 line), or a
/// bare base64 key as `minisign -P` takes it.
pub fn read_public_key(path: &Path) -> Result<TrustedKey, TrustError> {
    let text = read_key_file(path)?;
    let bad = |detail: String| TrustError::KeyFormat {
        path: path.to_path_buf(),
        what: "public key",
        detail,
    };
    let trimmed = text.trim();
    let key = if trimmed.lines().count() == 1 {
        PublicKey::from_base64(trimmed)
    } else {
        PublicKeyBox::from_string(&text).and_then(|b| b.into_public_key())
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(TrustedKey {
        key_id: key_id(key.keynum()),
        key,
        source: path.to_path_buf(),
    })
}

/// What the signature check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted {
        key_id: String,
        source: PathBuf,
        trusted_comment: String,
    },
    /// Accepted because `--allow-unsigned` was given.
    UnsignedAllowed,
}

/// The signer's key ID of a signature member, without checking it (for `inspect`).
pub fn signer_key_id(signature: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(signature).ok()?;
    SignatureBox::from_string(text)
        .ok()
        .map(|b| key_id(b.keynum()))
}

/// Checks the signature over the index bytes against the trust store.
pub fn check(
    index: &[u8],
    signature: Option<&[u8]>,
    trust: &TrustStore,
    allow_unsigned: bool,
) -> Result<Verdict, TrustError> {
    let Some(signature) = signature else {
        return if allow_unsigned {
            Ok(Verdict::UnsignedAllowed)
        } else {
            Err(TrustError::Unsigned)
        };
    };
    let text = std::str::from_utf8(signature)
        .map_err(|_| TrustError::MalformedSignature("not UTF-8 text".into()))?;
    let sig_box = SignatureBox::from_string(text)
        .map_err(|e| TrustError::MalformedSignature(e.to_string()))?;
    let signer = key_id(sig_box.keynum());
    let Some(trusted) = trust.find(sig_box.keynum()) else {
        return Err(TrustError::Untrusted {
            key_id: signer,
            searched: trust
                .searched
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            count: trust.keys.len(),
        });
    };
    minisign::verify(
        &trusted.key,
        &sig_box,
        Cursor::new(index),
        true,
        false,
        true,
    )
    .map_err(|e| TrustError::BadSignature {
        key_id: signer.clone(),
        detail: e.to_string(),
    })?;
    Ok(Verdict::Trusted {
        key_id: signer,
        source: trusted.source.clone(),
        trusted_comment: sig_box.trusted_comment().unwrap_or_default(),
    })
}

/// The gate `BundleReader::open_checked` runs before it parses the index.
pub struct TrustGate<'a> {
    pub trust: &'a TrustStore,
    pub allow_unsigned: bool,
    pub verdict: std::sync::Mutex<Option<Verdict>>,
}

impl<'a> TrustGate<'a> {
    pub fn new(trust: &'a TrustStore, allow_unsigned: bool) -> TrustGate<'a> {
        TrustGate {
            trust,
            allow_unsigned,
            verdict: std::sync::Mutex::new(None),
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().ok().and_then(|v| v.clone())
    }
}

impl IndexGate for TrustGate<'_> {
    fn admit(&self, index: &[u8], signature: Option<&[u8]>) -> Result<(), Box<dyn GateRefusal>> {
        let verdict = check(index, signature, self.trust, self.allow_unsigned)
            .map_err(|e| Box::new(e) as Box<dyn GateRefusal>)?;
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict);
        }
        Ok(())
    }
}
