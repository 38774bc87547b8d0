//! The routes' annotations and the pipeline's rules -> the OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`.
//!
//! The document is derived from the handlers (`#[utoipa::path]`) and the answer types
//! (`ToSchema`), then completed with what only the running server knows: the pipeline's rule
//! ids, the dimensions and metrics this build has, and the answers the guard in front of every
//! route gives (401 without a valid token, 414 for a query string past its bound).

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::RuleInfo;
use super::lake_view::{
    Duplicates, FileDetail, FileEntry, FilesPage, MatchPosition, NearCluster, NearMember,
};
use super::server::ErrorBody;
use super::{rest, server};
use crate::dataflow::stats::{Dimension, Metric};

/// The name of the bearer token scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "exoflow",
        description = "The live service of an exoflow run: health checks, metrics, the live \
            statistics and their change stream, and the committed lake's files and duplicates."
    ),
    paths(
        server::healthz,
        server::readyz,
        server::metrics_text,
        server::stats,
        server::stats_stream,
        server::epochs,
        server::rules,
        rest::files,
        rest::file,
        rest::duplicates,
        server::openapi,
    ),
    components(schemas(
        ErrorBody,
        FileEntry,
        MatchPosition,
        NearCluster,
        NearMember,
        FilesPage,
        FileDetail,
        Duplicates
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "statistics", description = "The live statistics"),
        (name = "lake", description = "The committed lake"),
    )
)]
struct ApiDoc;

/// Bearer tokens, as `--token-file` and `EXOFLOW_TOKEN` configure them.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, with `rules` as the values the rule filters accept.
pub fn document(rules: &[RuleInfo]) -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document encodes");
    let error = json!({
        "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } }
    });
    let dimensions: Vec<&str> = Dimension::ALL.map(Dimension::as_str).to_vec();
    let metrics: Vec<&str> = Metric::ALL.map(Metric::as_str).to_vec();
    let rule_ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc.to_string();
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let open = operation.get("security") == Some(&json!([{}]));
            let responses = &mut operation["responses"];
            if !open {
                responses["401"] = json!({
                    "description": "No valid bearer token",
                    "content": error.clone(),
                });
            }
            responses["414"] = json!({
                "description": "The query string is too long",
                "content": error.clone(),
            });
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            restrict(parameters, "dimension", &dimensions);
            restrict(parameters, "metric", &metrics);
            // The files listing refuses a rule it does not know; the statistics match none.
            if path == "/api/v1/files" {
                if rule_ids.is_empty() {
                    parameters.retain(|p| p["name"] != "rule");
                } else {
                    restrict(parameters, "rule", &rule_ids);
                }
            }
        }
    }
    doc.to_string()
}

/// Makes the query parameter `name` accept only `values`.
fn restrict(parameters: &mut [Value], name: &str, values: &[&str]) {
    for parameter in parameters.iter_mut() {
        if parameter["name"] == name && parameter["in"] == "query" {
            parameter["schema"] = json!({ "type": "string", "enum": values });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_the_document_names_every_route_and_the_rules() {
        let rules = vec![RuleInfo {
            id: "todo".into(),
            pattern: Some("TODO".into()),
            regex: false,
            secret: false,
        }];
        let doc: Value = serde_json::from_str(&document(&rules)).unwrap();
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths.len(), 11, "{paths:?}");
        let files = &doc["paths"]["/api/v1/files"]["get"];
        assert!(files["responses"]["401"].is_object());
        let rule = (files["parameters"].as_array().unwrap().iter())
            .find(|p| p["name"] == "rule")
            .unwrap();
        assert_eq!(rule["schema"]["enum"], json!(["todo"]));
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
    }
}
