//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF distribution
//! server, which `scripts/test.sh` installs), one per test, on a port of its own, with
//! its storage in a temporary folder and optionally htpasswd basic auth. Components are
//! pushed the way `wkg oci push` lays them out (one `application/wasm` layer, the wasm
//! config media type) with `oci-client`, and signed as `cosign sign --key` does with the
//! `sigstore` crate: the same crates the host reads them with, used here as a publisher.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sfn_wasm_host::source::{WASM_CONFIG, WASM_LAYER};
use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::{Constraint, CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, OciReference};
use zeroize::Zeroizing;

/// A running registry; stopped when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, as a reference names it.
    pub address: String,
    /// The user and password it requires, if any.
    pub login: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that requires `user`/`password` (HTTP basic, htpasswd with bcrypt).
    pub fn with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_owned(), password.to_owned())))
    }

    fn start_with(login: Option<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &login {
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tests\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry (Debian's docker-registry package; scripts/test.sh installs it)",
            );
        let registry = Self {
            child,
            address,
            login,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `oci://ADDRESS/REPOSITORY:TAG`.
    pub fn tagged(&self, repository: &str, tag: &str) -> String {
        format!("oci://{}/{repository}:{tag}", self.address)
    }

    /// `oci://ADDRESS/REPOSITORY@DIGEST`.
    pub fn pinned(&self, repository: &str, digest: &str) -> String {
        format!("oci://{}/{repository}@{digest}", self.address)
    }

    fn auth(&self) -> RegistryAuth {
        match &self.login {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pushes `wasm` as `REPOSITORY:TAG` in the wasm artifact layout; its manifest digest.
    pub async fn push(&self, repository: &str, tag: &str, wasm: &Path) -> String {
        self.push_layer(repository, tag, std::fs::read(wasm).unwrap(), WASM_LAYER)
            .await
    }

    /// Pushes `bytes` as the one layer (of `media_type`) of `REPOSITORY:TAG`; the
    /// manifest digest.
    pub async fn push_layer(
        &self,
        repository: &str,
        tag: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> String {
        let client = client();
        let reference = Reference::with_tag(self.address.clone(), repository.into(), tag.into());
        let config = Config::new(
            br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec(),
            WASM_CONFIG.into(),
            None,
        );
        client
            .push(
                &reference,
                &[ImageLayer::new(bytes, media_type.into(), None)],
                config,
                &self.auth(),
                None,
            )
            .await
            .unwrap();
        client
            .fetch_manifest_digest(&reference, &self.auth())
            .await
            .unwrap()
    }

    /// Signs the manifest `digest` of `repository` with `signer`, as `cosign sign --key`
    /// does (a `sha256-DIGEST.sig` artifact beside it).
    pub async fn sign(&self, repository: &str, digest: &str, key: &SigningKey) {
        let image: OciReference = format!("{}/{repository}@{digest}", self.address)
            .parse()
            .unwrap();
        let mut cosign = sigstore::cosign::ClientBuilder::default()
            .with_oci_client_config(sigstore::registry::ClientConfig {
                protocol: sigstore::registry::ClientProtocol::Http,
                ..Default::default()
            })
            .build()
            .unwrap();
        let auth = match &self.login {
            Some((user, password)) => Auth::Basic(user.clone(), password.clone()),
            None => Auth::Anonymous,
        };
        let (signature_image, source_digest) = cosign.triangulate(&image, &auth).await.unwrap();
        let mut layer = SignatureLayer::new_unsigned(&image, &source_digest).unwrap();
        PrivateKeySigner::new_with_raw(
            Zeroizing::new(key.private_pem.as_bytes().to_vec()),
            Zeroizing::new(Vec::new()),
            &SigningScheme::default(),
        )
        .unwrap()
        .add_constraint(&mut layer)
        .unwrap();
        cosign
            .push_signature(None, &auth, &signature_image, vec![layer])
            .await
            .unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private key that signs as `cosign sign --key cosign.key` does.
pub struct SigningKey {
    private_pem: Zeroizing<String>,
}

/// A new ECDSA P-256 key pair (cosign's default); its public key as PEM.
pub fn key_pair() -> (SigningKey, String) {
    let pair = SigningScheme::default()
        .create_signer()
        .unwrap()
        .to_sigstore_keypair()
        .unwrap();
    let key = SigningKey {
        private_pem: pair.private_key_to_pem().unwrap(),
    };
    (key, pair.public_key_to_pem().unwrap())
}

fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}
