//! `verify_key`: a component from an OCI registry is compiled only if a cosign signature
//! of its manifest digest verifies against the public key the config names. Offline: the
//! signature (cosign's `sha256-DIGEST.sig` artifact, or a Sigstore bundle among the
//! digest's referrers) is read from the same registry, and no transparency log or
//! certificate authority is asked. The format and the cryptography are the `sigstore`
//! crate's, the Sigstore project's own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, verify_constraints};
use sigstore::registry::{Auth, ClientConfig, OciReference};

use crate::error_chain::chain;

/// A cosign public key (PEM: ECDSA P-256/P-384, Ed25519 or RSA), read at start.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    path: PathBuf,
    pem: Arc<[u8]>,
}

impl VerifyKey {
    /// Reads and checks the key at `path`.
    ///
    /// # Errors
    /// For the config error: the file cannot be read, or holds no public key cosign
    /// signs for (`cosign generate-key-pair` writes `cosign.pub`).
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path)
            .map_err(|err| {
                format!(
                    "cannot read {}: {err}; name the cosign public key (`cosign.pub`), relative to the config file's folder",
                    path.display()
                )
            })?;
        PublicKeyVerifier::try_from(&pem).map_err(|err| {
            format!(
                "{} is not a public key cosign signs for ({err}): name the `cosign.pub` that `cosign generate-key-pair` wrote",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
            pem: pem.into(),
        })
    }

    /// The key's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyKey").field(&self.path).finish()
    }
}

/// Checks that `image` (a digest reference) has a signature `key` verifies.
///
/// # Errors
/// Why not, for `handler:rejected`: no signature, none by this key, or the signature
/// could not be read.
pub(super) async fn verify(
    image: &Reference,
    auth: &RegistryAuth,
    key: &VerifyKey,
    config: ClientConfig,
) -> Result<(), String> {
    let digest = image.digest().unwrap_or_default().to_owned();
    let verifier = PublicKeyVerifier::try_from(&key.pem)
        .map_err(|err| format!("{} is not a usable public key: {err}", key.path.display()))?;
    let source: OciReference = image
        .whole()
        .parse()
        .map_err(|err| format!("cannot name {digest} for sigstore: {err}"))?;
    let mut client = ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .map_err(|err| format!("cannot start the signature check: {err}"))?;
    let auth = match auth {
        RegistryAuth::Anonymous => Auth::Anonymous,
        RegistryAuth::Basic(user, password) => Auth::Basic(user.clone(), password.clone()),
        RegistryAuth::Bearer(token) => Auth::Bearer(token.clone()),
    };
    let layers = client
        .trusted_signature_layers(&auth, &source)
        .await
        .map_err(|err| format!("cannot read the signatures of {digest}: {}", chain(&err)))?;
    if layers.is_empty() {
        return Err(format!(
            "{digest} has no cosign signature the host could read (none was pushed, or the registry refused it: the warnings before this say which), and `verify_key` requires one by {}: sign it (`cosign sign --key cosign.key IMAGE@{digest}`)",
            key.path.display()
        ));
    }
    let constraints: Vec<Box<dyn VerificationConstraint>> = vec![Box::new(verifier)];
    verify_constraints(&layers, constraints.iter()).map_err(|_| {
        format!(
            "none of the {} signature(s) of {digest} verifies against `verify_key` {}: it was signed by another key, or altered",
            layers.len(),
            key.path.display()
        )
    })
}
