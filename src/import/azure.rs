//! `pinion import azure`: the cloud application gateway, from an ARM template
//! (`resources[]` of type `Microsoft.Network/applicationGateways`) or from the JSON that
//! `az network application-gateway show` prints.

pub mod arm;
mod certs;
mod map;
mod tls_policy;

use crate::import::Imported;
use arm::{get, Scope};
use serde_json::Value;

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither an ARM template with an application gateway nor a gateway resource.
    #[error(
        "no application gateway found: expected an ARM template with a resource of type \
         Microsoft.Network/applicationGateways, or the output of \
         `az network application-gateway show`"
    )]
    NoGateway,
}

/// Options of one import.
#[derive(Debug, Clone)]
pub struct Options {
    /// Values for the template's parameters (an ARM parameters file, or a plain object).
    pub parameters: Option<Value>,
    /// How the configuration names the directory the written files go to (relative to the
    /// configuration's directory, or absolute).
    pub certs_dir: String,
}

/// Imports the first application gateway of `source`.
pub fn import(source: &Value, options: &Options) -> Result<Imported, ImportError> {
    let (gateway, mut scope, path, others) = locate(source, options)?;
    // Only what the gateway's behaviour depends on: its location, tags and deployment order
    // mean nothing to pinion and would only fill the report with their expressions.
    // (`az … show` prints the properties flattened beside the name: all of it is relevant.)
    let flattened = get(gateway, "properties").is_none();
    let mut relevant = serde_json::Map::new();
    for key in ["name", "type", "properties"] {
        if let Some((k, v)) = gateway
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
        {
            relevant.insert(k.clone(), scope.resolve(v, &format!("{path}.{k}")));
        }
    }
    let resolved = if flattened {
        scope.resolve(gateway, &path)
    } else {
        Value::Object(relevant)
    };
    let mut imported = map::map(&resolved, &options.certs_dir);
    let report = &mut imported.report;
    for (i, name) in others.iter().enumerate() {
        report.not_mapped(
            format!("resources/{name}"),
            format!(
                "gateway {} of the template: one gateway per import; import it into its own \
                 file (it is gateway {} of the resources)",
                i + 2,
                i + 2
            ),
        );
    }
    let unresolved = std::mem::take(&mut scope.unresolved);
    let mut lines: Vec<_> = unresolved
        .into_iter()
        .map(|u| (format!("expression {}", u.path), u.reason))
        .collect();
    lines.sort();
    for (element, reason) in lines {
        report.not_mapped(
            element,
            format!("{reason}; what depended on it was left out or given a placeholder"),
        );
    }
    Ok(imported)
}

/// The gateway resource, the scope its expressions are evaluated in, its JSON path, and the
/// names of further gateways in the same template.
fn locate<'a>(
    source: &'a Value,
    options: &Options,
) -> Result<(&'a Value, Scope, String, Vec<String>), ImportError> {
    let is_gateway = |r: &Value| {
        get(r, "type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.Network/applicationGateways"))
    };
    if let Some(resources) = get(source, "resources").and_then(Value::as_array) {
        let mut found = resources.iter().enumerate().filter(|(_, r)| is_gateway(r));
        let (index, gateway) = found.next().ok_or(ImportError::NoGateway)?;
        let others = found
            .map(|(_, r)| {
                get(r, "name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        let scope = Scope::new(source, options.parameters.as_ref());
        return Ok((gateway, scope, format!("$.resources[{index}]"), others));
    }
    let props = get(source, "properties").unwrap_or(source);
    if is_gateway(source) || get(props, "backendAddressPools").is_some() {
        let scope = Scope::new(&Value::Null, options.parameters.as_ref());
        return Ok((source, scope, "$".to_owned(), Vec::new()));
    }
    Err(ImportError::NoGateway)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
