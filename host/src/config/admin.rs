//! `[host]`'s admin server keys: `admin_listen`, `admin_max_connections`,
//! `admin_token_file`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::checks::{Problem, at, optional, within};

/// The default of `admin_max_connections` (the admin server's own default).
const DEFAULT_ADMIN_MAX_CONNECTIONS: u64 = 64;
/// The longest token `admin_token_file` may hold: a header value, not a document.
const MAX_ADMIN_TOKEN_BYTES: u64 = 4096;

/// `[host] admin_token_file`, read: the bearer token `/status` requires. Only its
/// SHA-256 is kept (what the admin server compares), and `Debug` shows neither, so the
/// token never reaches a log, a `check` message or a debug print.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// The token's SHA-256.
    pub fn sha256(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The admin server (`/metrics`, `/healthz`, `/readyz`, `/status`), resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin_listen`: where it listens; `None`: no admin server.
    pub listen: Option<std::net::SocketAddr>,
    /// `admin_max_connections`: the most connections it keeps open at once (default
    /// 64); one more is answered 503 and closed.
    pub max_connections: usize,
    /// `admin_token_file`, read at start: the bearer token `/status` requires; `None`:
    /// `/status` is open to whoever reaches `listen`.
    pub token: Option<AdminToken>,
}

impl AdminConfig {
    /// Checks the admin keys of `[host]`; `token_file` is relative to `base`.
    pub(super) fn resolve(
        listen: Option<&str>,
        max_connections: Option<u64>,
        token_file: Option<PathBuf>,
        base: &Path,
    ) -> Result<Self, Problem> {
        let listen = optional(listen, "admin_listen", parse_listen)?;
        let max_connections = within(
            max_connections.unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
            1..=65_536,
        )
        .map_err(at("admin_max_connections"))?;
        let token = optional(
            token_file.map(|path| base.join(path)),
            "admin_token_file",
            |path| read_admin_token(&path),
        )?;
        Ok(Self {
            listen,
            // Within 1..=65,536: fits every usize this builds for.
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            token,
        })
    }
}

/// Reads the bearer token from `path`: one line of visible ASCII (surrounding white space
/// and the final line break are dropped). Messages name the file and never quote it.
fn read_admin_token(path: &Path) -> Result<AdminToken, String> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_ADMIN_TOKEN_BYTES + 1).read_to_end(&mut text))
        .map_err(|err| {
            format!(
                "cannot read {}: {err}; write the token /status requires there (one line), or remove the key",
                path.display()
            )
        })?;
    if text.len() as u64 > MAX_ADMIN_TOKEN_BYTES {
        return Err(format!(
            "{} holds more than {MAX_ADMIN_TOKEN_BYTES} bytes: it should hold one token, on one line",
            path.display()
        ));
    }
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(format!(
            "{} is empty: write the token /status requires there (one line, e.g. from `openssl rand -hex 32`)",
            path.display()
        ));
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(format!(
            "{} must hold one token of visible ASCII characters, without spaces or line breaks inside",
            path.display()
        ));
    }
    Ok(AdminToken(Sha256::digest(token).into()))
}

/// Parses an admin server address, `IP:PORT` (`127.0.0.1:9464`, `[::1]:9464`,
/// `0.0.0.0:9464` to listen on every interface).
///
/// # Errors
/// What is wrong, in words for a config error or a `--admin-listen` message.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "must be IP:PORT, like \"127.0.0.1:9464\" (a host name is not accepted); got {text:?}"
        )
    })
}
