//! HTTP/JSON over a unix socket: the CLI's side of netd's control API, and
//! netd's side of the Docker Engine API (for what the plugin protocol does
//! not carry: a container's name and labels).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {peer} at {path} ({hint})")]
    Connect {
        peer: &'static str,
        hint: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the server")]
    Http(#[from] hyper::Error),
    #[error("bad request")]
    Request(#[from] hyper::http::Error),
    /// The server refused; the message is its own.
    #[error("{0}")]
    Refused(String),
    #[error("the server answered {status} with an unreadable body: {body}")]
    Unreadable { status: StatusCode, body: String },
}

pub struct Client {
    socket: PathBuf,
    peer: &'static str,
    hint: &'static str,
}

impl Client {
    /// netd's control API.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            peer: "netd",
            hint: "is `netd run` running? is this root?",
        }
    }

    /// dockerd's Engine API.
    pub fn docker(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            peer: "the Docker API",
            hint: "is dockerd running? `netd run --docker-api-socket PATH` names its socket",
        }
    }

    /// A GET whose answer is a stream of lines: `on_line` gets each line
    /// as it comes, until it returns false or the server ends the stream.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        use http_body_util::BodyExt;
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    peer: self.peer,
                    hint: self.hint,
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(ClientError::Refused(message));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !on_line(String::from_utf8_lossy(&line[..end]).as_ref()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    peer: self.peer,
                    hint: self.hint,
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|_| ClientError::Unreadable { status, body: text });
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                // netd's errors are `error`, dockerd's `message`.
                ["error", "message"]
                    .iter()
                    .find_map(|k| v.get(k).and_then(|e| e.as_str()).map(str::to_string))
            })
            .unwrap_or(text);
        Err(ClientError::Refused(message))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| ClientError::Refused(e.to_string()))?;
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| ClientError::Refused(e.to_string()))?;
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None).await
    }
}
