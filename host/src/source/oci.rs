//! Handlers kept in an OCI registry, as the wasm ecosystem ships components (`wkg oci
//! push`, the CNCF wasm artifact layout: one `application/wasm` layer, a
//! `application/vnd.wasm.config.v0+json` config) and as AWS teams keep artifacts (ECR).
//!
//! A version is a manifest digest. A tag is followed by asking the registry for the
//! digest it names now (`HEAD` on the manifest), which costs no body; a digest never
//! moves, so a `@sha256:` reference is read once. Everything after the first question is
//! addressed by that digest, so a tag moved mid-read cannot mix two versions: the
//! signature checked, the manifest and the layer read all belong to the one digest.
//!
//! Registry and signature code are well-kept crates': `oci-client` (tokens, manifests,
//! digest-checked blobs) and `sigstore` (cosign's signature format and keys).

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::cosign::{self, VerifyKey};
use super::ecr::EcrTokens;
use super::{Fetch, Fetched, SourceError, is_loopback, too_large};
use crate::aws::AwsConfig;
use crate::error_chain::chain;

/// The media type of a wasm component's layer in the CNCF wasm artifact layout.
pub const WASM_LAYER: &str = "application/wasm";
/// The config media type of the CNCF wasm artifact layout.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// `handler = "oci://REGISTRY/REPOSITORY:TAG"` (or `@sha256:DIGEST`), with the key its
/// signatures must verify against, if the config names one.
#[derive(Clone, PartialEq, Eq)]
pub struct OciHandler {
    /// The reference, registry always explicit.
    pub reference: Reference,
    /// `verify_key`: a cosign public key; `None` takes any signature or none.
    pub verify_key: Option<VerifyKey>,
}

impl OciHandler {
    /// Parses what follows `oci://`.
    ///
    /// # Errors
    /// What is wrong and how to write it, for the config error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let example = "write oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST, like \"oci://ghcr.io/acme/enrich:1.2.0\"";
        let reference: Reference = text.parse().map_err(|err| {
            format!("\"oci://{text}\" is not an OCI reference ({err}): {example}")
        })?;
        // Without a registry the parser would quietly pick Docker Hub; a handler names
        // where it comes from.
        let named = text.split_once('/').map(|(first, _)| first);
        if named != Some(reference.registry()) {
            return Err(format!("\"oci://{text}\" names no registry: {example}"));
        }
        let (without_digest, _) = text.split_once('@').unwrap_or((text, ""));
        let last = without_digest.rsplit('/').next().unwrap_or_default();
        if reference.digest().is_none() && !last.contains(':') {
            return Err(format!(
                "\"oci://{text}\" names no tag or digest: {example}"
            ));
        }
        if let Some(digest) = reference.digest()
            && !is_sha256(digest)
        {
            return Err(format!(
                "\"oci://{text}\": the digest must be sha256:64-hex-digits; {example}"
            ));
        }
        Ok(Self {
            reference,
            verify_key: None,
        })
    }

    /// The registry, as the reference names it (`HOST[:PORT]`).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }
}

impl fmt::Display for OciHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}", self.reference.whole())
    }
}

impl fmt::Debug for OciHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciHandler")
            .field("reference", &self.reference.whole())
            .field("verify_key", &self.verify_key)
            .finish()
    }
}

/// Which credentials these are, without keeping them: a SHA-256 of their kind and value.
fn fingerprint(auth: &RegistryAuth) -> String {
    let text = match auth {
        RegistryAuth::Anonymous => "anonymous".to_owned(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    crate::ids::sha256_hex(text.as_bytes())
}

/// How a manifest digest is kept as the version last read ([`super::Fetched::tag`]).
fn version_tag(digest: &str) -> String {
    format!("oci:{digest}")
}

/// Whether `registry` (`HOST[:PORT]`) is this machine: the only registries reached
/// over plain HTTP.
fn loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    is_loopback(host)
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The registry clients for handler references: HTTPS, or plain HTTP for a loopback
/// registry (local tests, a pull-through cache on the same machine); credentials from
/// ECR for an ECR registry, else Docker's `config.json`, else anonymous.
///
/// One client per registry *and credentials*: an `oci-client` client keeps the first
/// credentials it was given for a registry for good, so a refreshed ECR token, a changed
/// `config.json` or a helper's new token gets a client of its own.
pub struct OciSource {
    clients: std::sync::Mutex<HashMap<String, (String, Client)>>,
    ecr: EcrTokens,
}

impl OciSource {
    /// The source; ECR tokens are asked for with `aws`'s credentials.
    pub fn new(aws: &AwsConfig) -> Self {
        Self {
            clients: std::sync::Mutex::new(HashMap::new()),
            ecr: EcrTokens::new(aws.clone()),
        }
    }

    /// The client for `registry` with `auth`: the last one, unless the credentials
    /// changed since.
    fn client(&self, registry: &str, auth: &RegistryAuth) -> Client {
        let fingerprint = fingerprint(auth);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, client)) = clients.get(registry)
            && *known == fingerprint
        {
            return client.clone();
        }
        let protocol = if loopback(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(client_config(protocol));
        clients.insert(registry.to_owned(), (fingerprint, client.clone()));
        client
    }

    /// The component `handler` names unless its manifest digest is still `known`; at
    /// most `max_bytes`. With a `verify_key`, the digest's cosign signature is checked
    /// before its layer is read.
    pub(super) async fn fetch(
        &self,
        handler: &OciHandler,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        let shown = handler.to_string();
        tokio::time::timeout(REQUEST_TIMEOUT, self.read(handler, known, max_bytes))
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::Oci {
                    source_name: shown,
                    message: format!("no complete answer within {} s", REQUEST_TIMEOUT.as_secs()),
                })
            })
    }

    async fn read(
        &self,
        handler: &OciHandler,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        let failed = |message: String| SourceError::Oci {
            source_name: handler.to_string(),
            message,
        };
        let reference = &handler.reference;
        // A digest never moves: once read, nothing is asked (not even credentials).
        if let Some(digest) = reference.digest()
            && known == Some(version_tag(digest).as_str())
        {
            return Ok(Fetch::Unchanged);
        }
        let auth = self.auth(handler.registry()).await.map_err(failed)?;
        let client = self.client(handler.registry(), &auth);
        let digest = match reference.digest() {
            Some(digest) => digest.to_owned(),
            None => client
                .fetch_manifest_digest(reference, &auth)
                .await
                .map_err(|err| failed(format!("cannot resolve the tag: {}", chain(&err))))?,
        };
        let tag = version_tag(&digest);
        if known == Some(tag.as_str()) {
            return Ok(Fetch::Unchanged);
        }
        let pinned = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            digest.clone(),
        );
        if let Some(key) = &handler.verify_key {
            cosign::verify(&pinned, &auth, key, client_config_for(handler.registry()))
                .await
                .map_err(|reason| SourceError::Unverified {
                    source_name: handler.to_string(),
                    digest: digest.clone(),
                    reason,
                })?;
        }
        let (manifest, _) = client
            .pull_image_manifest(&pinned, &auth)
            .await
            .map_err(|err| {
                failed(format!(
                    "cannot read the manifest {digest}: {}",
                    chain(&err)
                ))
            })?;
        let layer = wasm_layer(&manifest.layers).map_err(failed)?;
        if u64::try_from(layer.size).unwrap_or(u64::MAX) > max_bytes {
            return Err(too_large(handler, max_bytes));
        }
        let mut body = Capped::new(max_bytes);
        match client.pull_blob(&pinned, layer, &mut body).await {
            Ok(()) => {}
            Err(_) if body.over => return Err(too_large(handler, max_bytes)),
            Err(err) => {
                return Err(failed(format!(
                    "cannot read the layer {}: {}",
                    layer.digest,
                    chain(&err)
                )));
            }
        }
        Ok(Fetch::Fetched(Fetched {
            bytes: body.bytes,
            tag: Some(tag),
        }))
    }

    /// The credentials for `registry`: an ECR token (the host's AWS credentials), a
    /// Docker `config.json` entry or credential helper, else anonymous. Never logged.
    async fn auth(&self, registry: &str) -> Result<RegistryAuth, String> {
        if let Some(region) = super::ecr::region_of(registry) {
            return self.ecr.auth(registry, region).await;
        }
        let server = registry.to_owned();
        let found = tokio::task::spawn_blocking(move || docker_credential(&server))
            .await
            .map_err(|err| format!("reading Docker credentials failed: {err}"))??;
        use docker_credential::DockerCredential;
        match found {
            None => Ok(RegistryAuth::Anonymous),
            Some(DockerCredential::UsernamePassword(user, password)) => {
                Ok(RegistryAuth::Basic(user, password))
            }
            Some(DockerCredential::IdentityToken(_)) => Err(format!(
                "Docker's config.json holds an identity token for {registry}, which the host cannot use: log in with a user and password (or a credential helper that returns them)"
            )),
        }
    }
}

/// What Docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`) says for `server`:
/// its `auths` entry, or what the credential helper it names returns; `None` without a
/// file or an entry. Blocking: a helper is a process.
fn docker_credential(server: &str) -> Result<Option<docker_credential::DockerCredential>, String> {
    use docker_credential::CredentialRetrievalError as Failed;
    let folder = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker"))
        });
    let Some(path) = folder.map(|folder| folder.join("config.json")) else {
        return Ok(None);
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), server) {
        Ok(credential) => Ok(Some(credential)),
        Err(Failed::NoCredentialConfigured | Failed::ConfigNotFound) => Ok(None),
        // A helper with no entry for this registry (a `credsStore` serves every
        // registry): anonymous, as Docker does.
        Err(Failed::HelperFailure { stdout, stderr, .. })
            if stdout.contains("credentials not found")
                || stderr.contains("credentials not found") =>
        {
            Ok(None)
        }
        // A helper's output is not shown: it may hold a credential.
        Err(Failed::HelperFailure { helper, .. }) => Err(format!(
            "the credential helper docker-credential-{helper} that {} names for {server} failed (its output is not shown)",
            path.display()
        )),
        Err(err) => Err(format!(
            "reading the credentials {} holds for {server} failed: {err}",
            path.display()
        )),
    }
}

/// The one `application/wasm` layer of a manifest.
fn wasm_layer(
    layers: &[oci_client::manifest::OciDescriptor],
) -> Result<&oci_client::manifest::OciDescriptor, String> {
    let mut wasm = layers.iter().filter(|layer| layer.media_type == WASM_LAYER);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Ok(layer),
        (Some(_), Some(_)) => Err(format!(
            "the manifest has more than one {WASM_LAYER} layer; push one component per artifact"
        )),
        (None, _) => {
            let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            Err(format!(
                "the manifest has no {WASM_LAYER} layer (it has {types:?}): push the component as a wasm artifact (`wkg oci push`, or a layer of media type {WASM_LAYER})"
            ))
        }
    }
}

fn client_config(protocol: ClientProtocol) -> ClientConfig {
    ClientConfig {
        protocol,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    }
}

/// The protocol for `registry`, as sigstore's client takes it.
fn client_config_for(registry: &str) -> sigstore::registry::ClientConfig {
    sigstore::registry::ClientConfig {
        protocol: if loopback(registry) {
            sigstore::registry::ClientProtocol::Http
        } else {
            sigstore::registry::ClientProtocol::Https
        },
        ..sigstore::registry::ClientConfig::default()
    }
}

/// A body kept in memory up to a cap: one byte more fails the write, so that a layer
/// that says it is small but is not stops at the cap.
struct Capped {
    bytes: Vec<u8>,
    max: u64,
    over: bool,
}

impl Capped {
    fn new(max: u64) -> Self {
        Self {
            bytes: Vec::new(),
            max,
            over: false,
        }
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.bytes.len() + buf.len()) as u64 > self.max {
            self.over = true;
            return Poll::Ready(Err(std::io::Error::other("larger than handler_max_mb")));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_tag_or_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let tagged = OciHandler::parse("ghcr.io/acme/enrich:1.2.0").unwrap();
        assert_eq!(tagged.registry(), "ghcr.io");
        assert_eq!(tagged.to_string(), "oci://ghcr.io/acme/enrich:1.2.0");
        let pinned = OciHandler::parse(&format!("127.0.0.1:5000/h@{digest}")).unwrap();
        assert_eq!(pinned.reference.digest(), Some(digest.as_str()));
        assert_eq!(pinned.registry(), "127.0.0.1:5000");
        for bad in [
            "acme/enrich:1",
            "enrich:1",
            "ghcr.io/acme/enrich",
            "localhost:5000/enrich",
            "ghcr.io/acme/enrich@sha256:abc",
            "ghcr.io/Acme/enrich:1",
            "",
        ] {
            let err = OciHandler::parse(bad).unwrap_err();
            assert!(
                err.contains("oci://REGISTRY/REPOSITORY:TAG"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn only_this_machine_is_reached_over_plain_http() {
        for near in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(loopback(near), "{near}");
        }
        for far in [
            "127.0.0.1.nip.io:5000",
            "ghcr.io",
            "localhost.example.com:5000",
            "10.0.0.1:5000",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        ] {
            assert!(!loopback(far), "{far}");
        }
    }

    #[test]
    fn credentials_are_told_apart_without_being_kept() {
        let basic = |password: &str| RegistryAuth::Basic("AWS".into(), password.into());
        assert_eq!(fingerprint(&basic("a")), fingerprint(&basic("a")));
        assert_ne!(fingerprint(&basic("a")), fingerprint(&basic("b")));
        assert_ne!(
            fingerprint(&RegistryAuth::Anonymous),
            fingerprint(&RegistryAuth::Bearer("anonymous".into()))
        );
        assert!(!fingerprint(&basic("hunter2")).contains("hunter2"));
    }

    #[test]
    fn the_component_is_the_one_wasm_layer() {
        let layer = |media_type: &str| oci_client::manifest::OciDescriptor {
            media_type: media_type.into(),
            ..Default::default()
        };
        assert!(wasm_layer(&[layer(WASM_LAYER)]).is_ok());
        let err = wasm_layer(&[layer("application/vnd.oci.image.layer.v1.tar+gzip")]).unwrap_err();
        assert!(
            err.contains("tar+gzip") && err.contains(WASM_LAYER),
            "{err}"
        );
        assert!(wasm_layer(&[layer(WASM_LAYER), layer(WASM_LAYER)]).is_err());
        assert!(wasm_layer(&[]).is_err());
    }

    #[tokio::test]
    async fn a_body_stops_at_the_cap() {
        use tokio::io::AsyncWriteExt;
        let mut body = Capped::new(4);
        body.write_all(b"abcd").await.unwrap();
        assert!(body.write_all(b"e").await.is_err());
        assert!(body.over);
        assert_eq!(body.bytes, b"abcd");
    }
}
