//! A TCP proxy in front of LocalStack whose network the test cuts or throttles.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::emulator;

/// A TCP proxy in front of LocalStack whose network can be cut (every open connection
/// dropped, new ones reset) or made to throttle (open connections dropped, every request
/// on a new one answered `ThrottlingException`, as Step Functions does past a quota),
/// until it is restored.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Throttle,
}

impl Proxy {
    /// A proxy on a free port.
    pub async fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// A proxy accepting on `listener`.
    pub fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let target = emulator::endpoint()
            .trim_start_matches("http://")
            .to_owned();
        let (mode, _) = watch::channel(Mode::Open);
        let watch = mode.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let now = *watch.borrow();
                match now {
                    Mode::Cut => drop(inbound),
                    Mode::Throttle => {
                        let mut watch = watch.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = throttle(inbound) => {}
                                _ = watch.wait_for(|mode| *mode != Mode::Throttle) => {}
                            }
                        });
                    }
                    Mode::Open => {
                        let (target, mut watch) = (target.clone(), watch.clone());
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(&target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watch.wait_for(|mode| *mode != Mode::Open) => {}
                            }
                        });
                    }
                }
            }
        });
        Self { port, mode }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    pub fn throttle(&self) {
        self.mode.send_replace(Mode::Throttle);
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

/// Answers every request on `socket` with Step Functions' throttling error.
async fn throttle(mut socket: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut buffer = Vec::new();
    while super::http1::read_request(&mut socket, &mut buffer)
        .await
        .is_some()
    {
        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
