//! A mock Kubernetes API for `kube::Client`: lists from a map, watches as streams the caller
//! feeds, and a gate that can hold the EndpointSlice list (to observe the unsynced state).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use serde_json::{Value, json};

pub type Sender = tokio::sync::mpsc::UnboundedSender<Bytes>;

/// Objects per collection path, the open watch of each, and a gate that holds the slice list.
#[derive(Default)]
pub struct MockApi {
    pub lists: Mutex<HashMap<&'static str, Vec<Value>>>,
    pub watches: Mutex<HashMap<&'static str, Sender>>,
    pub slices_gate: tokio::sync::Notify,
    pub slices_open: std::sync::atomic::AtomicBool,
}

pub const NS: &str = "/api/v1/namespaces";
pub const SVC: &str = "/api/v1/services";
pub const EPS: &str = "/apis/discovery.k8s.io/v1/endpointslices";

impl MockApi {
    pub async fn handle(
        self: Arc<Self>,
        req: http::Request<kube::client::Body>,
    ) -> Result<http::Response<BoxBody<Bytes, Infallible>>, Infallible> {
        let path = [NS, SVC, EPS].into_iter().find(|p| *p == req.uri().path());
        let Some(path) = path else {
            let body = Full::new(Bytes::from_static(b"{}")).boxed();
            return Ok(http::Response::builder().status(404).body(body).unwrap());
        };
        let watch = req.uri().query().unwrap_or("").contains("watch=true");
        if watch {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
            self.watches.lock().unwrap().insert(path, tx);
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok(hyper::body::Frame::data(b)), rx))
            });
            return Ok(http::Response::new(StreamBody::new(stream).boxed()));
        }
        if path == EPS && !self.slices_open.load(std::sync::atomic::Ordering::SeqCst) {
            self.slices_gate.notified().await;
        }
        let items = self
            .lists
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default();
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "10"}, "items": items});
        Ok(http::Response::new(
            Full::new(Bytes::from(list.to_string())).boxed(),
        ))
    }

    pub fn send(&self, path: &'static str, event: Value) {
        let line = format!("{event}\n");
        self.watches.lock().unwrap()[path]
            .send(Bytes::from(line))
            .unwrap();
    }
}

impl MockApi {
    /// A `kube::Client` whose every request this mock answers.
    pub fn client(self: &Arc<Self>) -> kube::Client {
        let api = self.clone();
        kube::Client::new(
            tower::service_fn(move |req| api.clone().handle(req)),
            "default",
        )
    }
}
