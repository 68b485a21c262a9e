//! The requests tests make of a running server.

use std::net::SocketAddr;

use reqwest::multipart::{Form, Part};
use serde_json::json;

use super::fixtures::{PASSWORD, USER};

/// Where a server listens, and a client for it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn login_json(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A bearer token for [`USER`].
    pub async fn token(&self) -> String {
        self.token_for(USER, PASSWORD).await
    }

    pub async fn token_for(&self, user: &str, password: &str) -> String {
        let res = self
            .login_json(json!({"username": user, "password": password}))
            .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Posts `files` as `file` parts named `digit0`, `digit1`…, with the bearer token if given.
    pub async fn predict(&self, token: Option<&str>, files: Vec<Vec<u8>>) -> reqwest::Response {
        let mut form = Form::new();
        for (i, bytes) in files.into_iter().enumerate() {
            form = form.part("file", Part::bytes(bytes).file_name(format!("digit{i}")));
        }
        let mut req = self.client.post(self.url("/predict")).multipart(form);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

/// Status, `code` and `msg` of an error response, asserting the one JSON error shape.
pub async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    let msg = body["msg"]
        .as_str()
        .expect("error body has msg")
        .to_string();
    let code = body["code"]
        .as_str()
        .expect("error body has code")
        .to_string();
    (status, code, msg)
}
