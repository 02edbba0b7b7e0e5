//! Every response the test suite receives is checked against the server's own OpenAPI document
//! (`/api/openapi.json`): the status must be documented for the operation the request hit, and
//! a JSON body must validate against that response's schema. Generated clients (the web UI's,
//! users' own) trust the document; this keeps it honest with every test that runs.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// The document, and a compiled validator per (operation, status), made on first use.
#[derive(Debug)]
pub struct Conformance {
    document: Value,
    validators: Mutex<HashMap<(String, String, String), std::sync::Arc<jsonschema::Validator>>>,
}

impl Conformance {
    pub fn new(document: Value) -> Conformance {
        assert!(
            document["paths"].is_object(),
            "not an OpenAPI document: {document}"
        );
        Conformance {
            document,
            validators: Mutex::new(HashMap::new()),
        }
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The documented path template `path` (without its query) matches, if any. A literal
    /// segment beats a parameter (`/api/stats/starts` is not `/api/sessions/{id}`).
    pub fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, &String)> = None;
        for template in self.document["paths"].as_object()?.keys() {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut params = 0;
            let matches = parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') && part.ends_with('}') {
                    params += 1;
                    !segment.is_empty()
                } else {
                    part == segment
                }
            });
            if matches && best.is_none_or(|(fewest, _)| params < fewest) {
                best = Some((params, template));
            }
        }
        best.map(|(_, template)| template.clone())
    }

    /// Checks one response. `body` is the JSON body, or a JSON string holding a body that was
    /// not JSON (as [`super::TestApp::request`] gives them).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let method = method.to_ascii_lowercase();
        let Some(template) = self.template_of(path) else {
            if !path.starts_with("/api/") {
                // Pages outside the API (`/`, `/login`) are not part of the document.
                return Ok(());
            }
            // An undocumented API path: only the JSON 404/405 of the fallback may answer.
            if !matches!(status, 404 | 405) {
                return Err(format!(
                    "{method} {path} answered {status}, but the document has no such path"
                ));
            }
            return self.validate_body(
                "#/components/schemas/ApiError",
                body,
                &method,
                path,
                status,
            );
        };
        let Some(operation) = self.document["paths"][&template].get(&method) else {
            if status == 405 {
                return self.validate_body(
                    "#/components/schemas/ApiError",
                    body,
                    &method,
                    path,
                    status,
                );
            }
            return Err(format!(
                "{method} {path} answered {status}, but the document has no {method} on {template}"
            ));
        };
        let Some(response) = operation["responses"].get(status.to_string()) else {
            return Err(format!(
                "{method} {template} answered {status}, which its document does not list \
                 (it lists {:?}); body: {body}",
                operation["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect::<Vec<_>>())
            ));
        };
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            if status == 101 || body.as_str().is_some_and(str::is_empty) {
                return Ok(());
            }
            return Err(format!(
                "{method} {template} {status}: the document says no body, got {body}"
            ));
        };
        let Some(media) = content.get("application/json") else {
            // Documented as text (a build log): any text will do.
            return match body {
                Value::String(_) => Ok(()),
                other => Err(format!(
                    "{method} {template} {status}: documented as {:?}, got JSON {other}",
                    content.keys().collect::<Vec<_>>()
                )),
            };
        };
        let key = (method.clone(), template.clone(), status.to_string());
        let validator = {
            let mut validators = self.validators.lock().unwrap();
            match validators.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = std::sync::Arc::new(self.validator(&media["schema"])?);
                    validators.insert(key, v.clone());
                    v
                }
            }
        };
        report(&validator, body, &method, &template, status)
    }

    fn validate_body(
        &self,
        pointer: &str,
        body: &Value,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<(), String> {
        let validator = self.validator(&json!({ "$ref": pointer }))?;
        report(&validator, body, method, path, status)
    }

    /// A validator for `schema`, whose `#/components/…` references resolve in the document.
    fn validator(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.document["components"],
            "allOf": [schema],
        });
        jsonschema::draft202012::new(&root)
            .map_err(|e| format!("the document's schema {schema} does not compile: {e}"))
    }
}

fn report(
    validator: &jsonschema::Validator,
    body: &Value,
    method: &str,
    template: &str,
    status: u16,
) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(body)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {template} {status}: the body does not match the document: {}; body: {}",
            errors.join("; "),
            shorten(body)
        ))
    }
}

fn shorten(body: &Value) -> String {
    let text = body.to_string();
    match text.char_indices().nth(2_000) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
