//! SigV4-signed AWS JSON 1.1 calls.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{type_name}: {message}")]
    Aws { type_name: String, message: String },
    #[error("cannot reach berth at {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("unexpected response from {endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: String,
    creds: Credentials,
    agent: ureq::Agent,
}

impl ApiClient {
    /// `endpoint` is `http://host:port`.
    pub fn new(endpoint: &str, creds: Credentials) -> Self {
        ApiClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            creds,
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `host:port` of the endpoint.
    pub fn host(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.endpoint)
            .split('/')
            .next()
            .unwrap_or("")
    }

    /// A SigV4-signed `POST /` of `body` for `service`.
    fn send(
        &self,
        service: &str,
        content_type: &str,
        target: Option<&str>,
        body: &[u8],
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let amz_date = berth_sigv4::format_amz_date(now);
        let host = self.host().to_string();
        let hash = berth_sigv4::sha256_hex(body);
        let mut headers = vec![
            ("content-type", content_type),
            ("host", host.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        if let Some(t) = target {
            headers.push(("x-amz-target", t));
        }
        let req = berth_sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256_hex: &hash,
        };
        let auth = berth_sigv4::sign(
            &req,
            &self.creds.access_key_id,
            &self.creds.secret_access_key,
            &self.creds.region,
            service,
            &amz_date,
        );
        let mut r = self.agent.post(&format!("{}/", self.endpoint));
        for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
            r = r.set(k, v);
        }
        r.set("authorization", &auth)
            .send_bytes(body)
            .map_err(Box::new)
    }

    /// Calls `prefix.op` with `input`; AWS errors come back as [`ApiError::Aws`].
    pub fn call(
        &self,
        prefix: &str,
        op: &str,
        service: &str,
        input: &Value,
    ) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(input).expect("json serialises");
        let target = format!("{prefix}.{op}");
        let resp = self
            .send(service, "application/x-amz-json-1.1", Some(&target), &body)
            .map_err(|e| *e);
        let proto = |m: String| ApiError::Protocol {
            endpoint: self.endpoint.clone(),
            message: m,
        };
        match resp {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| proto(e.to_string()))?;
                serde_json::from_str::<Value>(&text).map_err(|e| proto(e.to_string()))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) if v.get("__type").is_some() => Err(ApiError::Aws {
                        type_name: v["__type"]
                            .as_str()
                            .unwrap_or("")
                            .rsplit('#')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                        message: v
                            .get("message")
                            .or(v.get("Message"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    }),
                    _ => Err(proto(format!(
                        "HTTP {code}: {}",
                        text.chars().take(200).collect::<String>()
                    ))),
                }
            }
            Err(e) => Err(ApiError::Transport {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// ECR call (signing name `ecr`).
    pub fn ecr(&self, op: &str, input: &Value) -> Result<Value, ApiError> {
        self.call(crate::ECR, op, "ecr", input)
    }

    /// ECS call (signing name `ecs`).
    pub fn ecs(&self, op: &str, input: &Value) -> Result<Value, ApiError> {
        self.call(crate::ECS, op, "ecs", input)
    }

    /// Cloud Map call over JSON 1.1 (signing name `servicediscovery`).
    pub fn discovery(&self, op: &str, input: &Value) -> Result<Value, ApiError> {
        self.call(crate::DISCOVERY, op, "servicediscovery", input)
    }

    /// ELBv2 call over the Query protocol (signing name `elasticloadbalancing`):
    /// `params` are the form members (`Listeners.member.1.Port` style); the answer's
    /// `<{Action}Result>` as a value.
    pub fn elb(&self, action: &str, params: &[(&str, String)]) -> Result<Value, ApiError> {
        let mut pairs = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), "2015-12-01".to_string()),
        ];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let body = crate::query::form_encode(&pairs).into_bytes();
        let resp = self
            .send(
                "elasticloadbalancing",
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
                &body,
            )
            .map_err(|e| *e);
        let proto = |m: String| ApiError::Protocol {
            endpoint: self.endpoint.clone(),
            message: m,
        };
        let (ok, text) = match resp {
            Ok(resp) => (true, resp.into_string().map_err(|e| proto(e.to_string()))?),
            Err(ureq::Error::Status(_, resp)) => (false, resp.into_string().unwrap_or_default()),
            Err(e) => {
                return Err(ApiError::Transport {
                    endpoint: self.endpoint.clone(),
                    message: e.to_string(),
                })
            }
        };
        let doc = crate::query::xml_to_value(&text)
            .ok_or_else(|| proto(text.chars().take(200).collect()))?;
        if !ok {
            return Err(ApiError::Aws {
                type_name: doc["Error"]["Code"].as_str().unwrap_or("").to_string(),
                message: doc["Error"]["Message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(doc[format!("{action}Result")].clone())
    }

    /// CloudWatch Logs call (signing name `logs`).
    pub fn logs(&self, op: &str, input: &Value) -> Result<Value, ApiError> {
        self.call(crate::LOGS, op, "logs", input)
    }
}
