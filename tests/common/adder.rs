//! The model the serving process tests deploy: adds its config's `add` to
//! the sum of a list, and says which process answered.

use prism_serve::{Json, Model};
use serde_json::{json, Value};
use std::time::Duration;

/// Adds the config's `add` to the sum of a list.
pub struct Adder {
    add: i64,
}

impl Model for Adder {
    type Request = Json<Vec<i64>>;
    type Response = Json<Value>;
    fn new(config: &Value) -> Result<Self, String> {
        Ok(Adder {
            add: config["add"].as_i64().unwrap_or(0),
        })
    }
    async fn call(&self, Json(v): Json<Vec<i64>>) -> Result<Json<Value>, String> {
        Ok(Json(
            json!({ "sum": v.iter().sum::<i64>() + self.add, "pid": std::process::id() }),
        ))
    }
    fn reconfigure(&mut self, config: &Value) -> Result<(), String> {
        self.add = config["add"].as_i64().unwrap_or(0);
        Ok(())
    }
}
prism_serve::model!(Adder);

/// POSTs `body` to `url`: the answer as JSON, null on any failure.
pub fn post(url: &str, body: &str) -> Value {
    ureq::post(url)
        .timeout(Duration::from_secs(30))
        .send_string(body)
        .ok()
        .and_then(|r| r.into_string().ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}
