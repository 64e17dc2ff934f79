//! What a user serves: a [`Model`] (built once per replica, then called
//! with one request or a batch), the [`Codec`]s its requests and responses
//! travel in, and the compile-time registration that lets every replica
//! process find it by name ([`crate::model!`]).

use crate::drift::{DriftReport, Monitor};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

/// How a request or response travels: HTTP bodies and handle calls carry
/// these bytes.
pub trait Codec: Sized + Send + 'static {
    /// The HTTP `Content-Type` of the encoded form.
    const CONTENT_TYPE: &'static str;
    /// Encodes the value.
    fn encode(&self) -> Vec<u8>;
    /// Decodes bytes; the error says what was wrong with them.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// A JSON body (`application/json`) holding a `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T> Codec for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    const CONTENT_TYPE: &'static str = "application/json";
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_else(|e| format!("\"{e}\"").into_bytes())
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|e| format!("the body is not the JSON this deployment takes: {e}"))
    }
}

/// Raw bytes (`application/octet-stream`), passed through untouched.
impl Codec for Vec<u8> {
    const CONTENT_TYPE: &'static str = "application/octet-stream";
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// UTF-8 text (`text/plain`).
impl Codec for String {
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("the body is not UTF-8: {e}"))
    }
}

/// A served model. One instance per replica, built by [`Model::new`] in the
/// replica's process (load weights, warm up), then called from the
/// replica's event loop; calls interleave at their `.await`s up to the
/// deployment's `max_ongoing_requests`.
///
/// ```
/// use prism_serve::{Json, Model};
///
/// struct Doubler { by: f32 }
///
/// impl Model for Doubler {
///     type Request = Json<Vec<f32>>;
///     type Response = Json<Vec<f32>>;
///     fn new(config: &serde_json::Value) -> Result<Self, String> {
///         Ok(Doubler { by: config["by"].as_f64().unwrap_or(2.0) as f32 })
///     }
///     async fn call(&self, Json(x): Json<Vec<f32>>) -> Result<Json<Vec<f32>>, String> {
///         Ok(Json(x.iter().map(|v| v * self.by).collect()))
///     }
/// }
/// prism_serve::model!(Doubler);
/// ```
pub trait Model: Sized + 'static {
    /// What callers send.
    type Request: Codec;
    /// What it answers.
    type Response: Codec;

    /// Builds the replica's model from the deployment's user config.
    fn new(config: &serde_json::Value) -> Result<Self, String>;

    /// Answers one request.
    fn call(&self, req: Self::Request) -> impl Future<Output = Result<Self::Response, String>>;

    /// Answers a batch (the dynamic batcher's unit when the deployment sets
    /// `max_batch_size` above 1); by default, one [`Model::call`] after
    /// another. Returns one result per request, in order.
    fn call_batch(
        &self,
        reqs: Vec<Self::Request>,
    ) -> impl Future<Output = Vec<Result<Self::Response, String>>> {
        async move {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                out.push(self.call(r).await);
            }
            out
        }
    }

    /// Takes a new user config without a restart (a config change that
    /// touches nothing else calls this on every replica).
    fn reconfigure(&mut self, _config: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// The replica's health check: an error takes it out of routing and
    /// has it replaced.
    fn check_health(&self) -> Result<(), String> {
        Ok(())
    }

    /// The input features drift detection watches for one request, in the
    /// order of the deployment's drift reference ([`crate::drift`]); `None`
    /// (the default): this model's inputs are not watched.
    fn drift_features(&self, _req: &Self::Request) -> Option<Vec<f64>> {
        None
    }

    /// The prediction watched with them (after the features); `None` (the
    /// default): inputs only.
    fn drift_prediction(&self, _resp: &Self::Response) -> Option<f64> {
        None
    }
}

/// A batch of encoded answers, one per request.
pub(crate) type BatchFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<Vec<u8>, String>>> + 'a>>;

/// A model behind bytes: what a replica holds.
pub(crate) trait DynModel {
    fn call_batch(&self, reqs: Vec<Vec<u8>>) -> BatchFuture<'_>;
    fn reconfigure(&mut self, config: &serde_json::Value) -> Result<(), String>;
    fn check_health(&self) -> Result<(), String>;
    fn content_type(&self) -> &'static str;
    /// Watch live inputs (and predictions) with this monitor.
    fn watch_drift(&self, monitor: Monitor);
    /// The last finished drift window.
    fn drift(&self) -> Option<DriftReport>;
}

struct Erased<M> {
    model: M,
    drift: RefCell<Option<Monitor>>,
}

impl<M: Model> DynModel for Erased<M> {
    fn call_batch(&self, reqs: Vec<Vec<u8>>) -> BatchFuture<'_> {
        Box::pin(async move {
            // Undecodable requests answer alone; the rest go as one batch.
            let mut slots: Vec<Option<Result<Vec<u8>, String>>> = Vec::with_capacity(reqs.len());
            let mut good = Vec::with_capacity(reqs.len());
            for r in &reqs {
                match M::Request::decode(r) {
                    Ok(v) => {
                        slots.push(None);
                        good.push(v);
                    }
                    Err(e) => slots.push(Some(Err(format!("bad request: {e}")))),
                }
            }
            let n = good.len();
            let watched = self.drift.borrow().is_some();
            let features: Vec<Option<Vec<f64>>> = match watched {
                true => good.iter().map(|r| self.model.drift_features(r)).collect(),
                false => Vec::new(),
            };
            let answers = self.model.call_batch(good).await;
            if watched {
                let mut m = self.drift.borrow_mut();
                for (f, a) in features.into_iter().zip(&answers) {
                    let (Some(mut f), Some(m)) = (f, m.as_mut()) else {
                        continue;
                    };
                    if let Ok(resp) = a {
                        f.extend(self.model.drift_prediction(resp));
                    }
                    m.observe(&f);
                }
            }
            let mut answers = answers.into_iter();
            let mut got = 0;
            let out = slots
                .into_iter()
                .map(|s| match s {
                    Some(done) => done,
                    None => match answers.next() {
                        Some(a) => {
                            got += 1;
                            a.map(|resp| resp.encode())
                        }
                        None => Err(format!(
                            "the model's call_batch returned {got} answers for {n} requests"
                        )),
                    },
                })
                .collect();
            out
        })
    }

    fn reconfigure(&mut self, config: &serde_json::Value) -> Result<(), String> {
        self.model.reconfigure(config)
    }

    fn check_health(&self) -> Result<(), String> {
        self.model.check_health()
    }

    fn watch_drift(&self, monitor: Monitor) {
        *self.drift.borrow_mut() = Some(monitor);
    }

    fn drift(&self) -> Option<DriftReport> {
        self.drift.borrow().as_ref()?.last().cloned()
    }

    fn content_type(&self) -> &'static str {
        <M::Response as Codec>::CONTENT_TYPE
    }
}

/// A model type registered with [`crate::model!`].
#[doc(hidden)]
pub struct ModelRegistration {
    /// Its name (the type's name unless given).
    pub name: &'static str,
    /// Builds it from a user config.
    pub build: fn(&serde_json::Value) -> Result<Box<dyn std::any::Any>, String>,
}

inventory::collect!(ModelRegistration);

/// Builds `M` behind the type-erased interface (what [`crate::model!`]
/// registers).
#[doc(hidden)]
pub fn build_erased<M: Model>(
    config: &serde_json::Value,
) -> Result<Box<dyn std::any::Any>, String> {
    let m: Box<dyn DynModel> = Box::new(Erased {
        model: M::new(config)?,
        drift: RefCell::new(None),
    });
    Ok(Box::new(m))
}

/// A model type with a registered name ([`crate::model!`] implements it).
pub trait Named: Model {
    /// The name replicas look it up by.
    const NAME: &'static str;
}

/// Registers a [`Model`] type so every replica process can build it by
/// name: `prism_serve::model!(Digits);` or `prism_serve::model!(Digits, "digits-v2");`.
#[macro_export]
macro_rules! model {
    ($t:ty) => {
        $crate::model!($t, stringify!($t));
    };
    ($t:ty, $name:expr) => {
        impl $crate::Named for $t {
            const NAME: &'static str = $name;
        }
        $crate::__private::inventory::submit! {
            $crate::__private::ModelRegistration {
                name: $name,
                build: $crate::__private::build_erased::<$t>,
            }
        }
    };
}

/// Builds the registered model `name`.
pub(crate) fn build(name: &str, config: &serde_json::Value) -> Result<Box<dyn DynModel>, String> {
    let all: Vec<&ModelRegistration> = inventory::iter::<ModelRegistration>().collect();
    let reg = all.iter().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|r| r.name).collect();
        format!(
            "no model named {name:?} is registered in this binary with prism_serve::model! \
             (registered: {known:?})"
        )
    })?;
    let any = (reg.build)(config)?;
    any.downcast::<Box<dyn DynModel>>()
        .map(|b| *b)
        .map_err(|_| format!("model {name:?}: registration built the wrong type"))
}
