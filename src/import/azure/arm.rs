//! ARM template expressions: `[parameters('x')]`, `[variables('y')]`, `concat`, `format`,
//! `resourceId`, and the few string and logic functions gateway templates use.
//!
//! Evaluation is pure: the template's parameters (defaults, overridden by a parameters file) and
//! variables in, a value out. What cannot be evaluated becomes `null` and is recorded with its
//! JSON path, so the import can go on with everything else.

use serde_json::{Map, Value};

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// JSON path of the value in the template (`$.resources[2].properties.…`).
    pub path: String,
    /// What was missing or unsupported.
    pub reason: String,
}

/// The context expressions are evaluated in.
#[derive(Debug, Default)]
pub struct Scope {
    parameters: Map<String, Value>,
    variables: Map<String, Value>,
    given: Map<String, Value>,
    /// Everything that could not be evaluated so far.
    pub unresolved: Vec<Unresolved>,
    depth: usize,
}

/// A case-insensitive key lookup in a JSON object: ARM property names are case-insensitive.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

impl Scope {
    /// A scope for `template`, with values from a parameters file (`{"parameters": {"x":
    /// {"value": …}}}` as Azure writes them, or a plain `{"x": …}` object).
    pub fn new(template: &Value, parameters_file: Option<&Value>) -> Scope {
        let mut given = Map::new();
        if let Some(file) = parameters_file {
            let params = get(file, "parameters").unwrap_or(file);
            if let Some(obj) = params.as_object() {
                for (k, v) in obj {
                    let value = get(v, "value").cloned().unwrap_or_else(|| v.clone());
                    given.insert(k.to_ascii_lowercase(), value);
                }
            }
        }
        let lower = |v: Option<&Value>| -> Map<String, Value> {
            v.and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Scope {
            parameters: lower(get(template, "parameters")),
            variables: lower(get(template, "variables")),
            given,
            unresolved: Vec::new(),
            depth: 0,
        }
    }

    /// `value` with every expression string inside it evaluated.
    pub fn resolve(&mut self, value: &Value, path: &str) -> Value {
        match value {
            Value::String(s) => self.string(s, path),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.resolve(v, &format!("{path}[{i}]")))
                    .collect(),
            ),
            Value::Object(obj) => Value::Object(
                obj.iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v, &format!("{path}.{k}"))))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn string(&mut self, s: &str, path: &str) -> Value {
        if let Some(literal) = s.strip_prefix("[[") {
            return Value::String(format!("[{literal}"));
        }
        let Some(expr) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
            return Value::String(s.to_owned());
        };
        let mut parser = Parser {
            text: expr.as_bytes(),
            at: 0,
        };
        let result = parser
            .expr()
            .and_then(|e| {
                parser.skip_ws();
                if parser.at == parser.text.len() {
                    Ok(e)
                } else {
                    Err(format!("unexpected text at {} of `{s}`", parser.at + 1))
                }
            })
            .and_then(|e| self.eval(&e));
        match result {
            Ok(v) => v,
            Err(reason) => {
                self.unresolved.push(Unresolved {
                    path: path.to_owned(),
                    reason: format!("{reason} (in `{s}`)"),
                });
                Value::Null
            }
        }
    }

    fn parameter(&mut self, name: &str) -> Result<Value, String> {
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.given.get(&key) {
            return Ok(v.clone());
        }
        let Some(decl) = self.parameters.get(&key).cloned() else {
            return Err(format!("parameter `{name}` is not declared"));
        };
        match get(&decl, "defaultValue") {
            Some(default) => self.nested(default, &format!("$.parameters.{name}.defaultValue")),
            None => Err(format!(
                "parameter `{name}` has no default value and was not given (--parameters)"
            )),
        }
    }

    fn variable(&mut self, name: &str) -> Result<Value, String> {
        let Some(v) = self.variables.get(&name.to_ascii_lowercase()).cloned() else {
            return Err(format!("variable `{name}` is not declared"));
        };
        self.nested(&v, &format!("$.variables.{name}"))
    }

    /// A default value or variable, which may itself hold expressions; a failure inside it
    /// fails the expression that asked.
    fn nested(&mut self, v: &Value, path: &str) -> Result<Value, String> {
        if self.depth > 32 {
            return Err("expressions nest too deeply (a variable refers to itself?)".into());
        }
        self.depth += 1;
        let before = self.unresolved.len();
        let out = self.resolve(v, path);
        self.depth -= 1;
        if self.unresolved.len() > before {
            let inner = self.unresolved.split_off(before);
            let reasons: Vec<_> = inner.into_iter().map(|u| u.reason).collect();
            return Err(reasons.join("; "));
        }
        Ok(out)
    }

    fn eval(&mut self, e: &Expr) -> Result<Value, String> {
        match e {
            Expr::Str(s) => Ok(Value::String(s.clone())),
            Expr::Num(n) => Ok(Value::from(*n)),
            Expr::Member(inner, name) => {
                let v = self.eval(inner)?;
                get(&v, name)
                    .cloned()
                    .ok_or_else(|| format!("no property `{name}`"))
            }
            Expr::Index(inner, index) => {
                let v = self.eval(inner)?;
                let i = self.eval(index)?;
                match (&v, &i) {
                    (Value::Array(a), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| a.get(usize::try_from(n).ok()?))
                        .cloned()
                        .ok_or_else(|| "index out of range".to_owned()),
                    (Value::Object(_), Value::String(k)) => get(&v, k)
                        .cloned()
                        .ok_or_else(|| format!("no property `{k}`")),
                    _ => Err("cannot index this value".to_owned()),
                }
            }
            Expr::Call(name, args) => {
                let args = args
                    .iter()
                    .map(|a| self.eval(a))
                    .collect::<Result<Vec<_>, _>>()?;
                self.call(name, &args)
            }
        }
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, String> {
        let text = |i: usize| -> Result<String, String> {
            match args.get(i) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                Some(_) => Err(format!("{name}: argument {} is not a string", i + 1)),
                None => Err(format!("{name}: argument {} is missing", i + 1)),
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "parameters" => self.parameter(&text(0)?),
            "variables" => self.variable(&text(0)?),
            "concat" => {
                if args.iter().all(Value::is_array) {
                    let all = args
                        .iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .cloned()
                        .collect();
                    return Ok(Value::Array(all));
                }
                let mut out = String::new();
                for i in 0..args.len() {
                    out.push_str(&text(i)?);
                }
                Ok(Value::String(out))
            }
            "format" => {
                let template = text(0)?;
                let mut out = template.clone();
                for i in 1..args.len() {
                    out = out.replace(&format!("{{{}}}", i - 1), &text(i)?);
                }
                Ok(Value::String(out))
            }
            "resourceid" => {
                // Only the last segments matter inside one template: a reference is matched by
                // the collection and the name at its end.
                let parts = (0..args.len()).map(text).collect::<Result<Vec<_>, _>>()?;
                let mut id = String::new();
                for p in parts {
                    id.push('/');
                    id.push_str(p.trim_matches('/'));
                }
                Ok(Value::String(id))
            }
            "tolower" => Ok(Value::String(text(0)?.to_lowercase())),
            "toupper" => Ok(Value::String(text(0)?.to_uppercase())),
            "string" => match args.first() {
                Some(Value::String(s)) => Ok(Value::String(s.clone())),
                Some(v) => Ok(Value::String(v.to_string())),
                None => Err("string: argument missing".into()),
            },
            "int" => text(0)?
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "int: not an integer".to_owned()),
            "bool" => match args.first() {
                Some(Value::Bool(b)) => Ok(Value::Bool(*b)),
                _ => Ok(Value::Bool(text(0)?.eq_ignore_ascii_case("true"))),
            },
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "equals" => Ok(Value::Bool(args.first() == args.get(1))),
            "not" => match args.first() {
                Some(Value::Bool(b)) => Ok(Value::Bool(!b)),
                _ => Err("not: argument is not a boolean".into()),
            },
            "if" => match args.first() {
                Some(Value::Bool(true)) => args.get(1).cloned().ok_or("if: missing".into()),
                Some(Value::Bool(false)) => args.get(2).cloned().ok_or("if: missing".into()),
                _ => Err("if: condition is not a boolean".into()),
            },
            other => Err(format!(
                "function `{other}` is not evaluated by the importer (give the value with \
                 --parameters, or edit the output)"
            )),
        }
    }
}

#[derive(Debug)]
enum Expr {
    Str(String),
    Num(i64),
    Call(String, Vec<Expr>),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at {}", c as char, self.at + 1))
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.at += 1;
                    e = Expr::Member(Box::new(e), self.ident()?);
                }
                Some(b'[') => {
                    self.at += 1;
                    let index = self.expr()?;
                    self.eat(b']')?;
                    e = Expr::Index(Box::new(e), Box::new(index));
                }
                _ => return Ok(e),
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        self.skip_ws();
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.at += 1;
        }
        if start == self.at {
            return Err(format!("expected a name at {}", self.at + 1));
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'\'') => {
                self.at += 1;
                let mut out = Vec::new();
                loop {
                    match self.text.get(self.at) {
                        None => return Err("unterminated string".into()),
                        Some(b'\'') if self.text.get(self.at + 1) == Some(&b'\'') => {
                            out.push(b'\'');
                            self.at += 2;
                        }
                        Some(b'\'') => {
                            self.at += 1;
                            break;
                        }
                        Some(c) => {
                            out.push(*c);
                            self.at += 1;
                        }
                    }
                }
                Ok(Expr::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.at;
                self.at += 1;
                while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                String::from_utf8_lossy(&self.text[start..self.at])
                    .parse()
                    .map(Expr::Num)
                    .map_err(|_| "bad number".to_owned())
            }
            _ => {
                let name = self.ident()?;
                self.eat(b'(')?;
                let mut args = Vec::new();
                if self.peek() == Some(b')') {
                    self.at += 1;
                    return Ok(Expr::Call(name, args));
                }
                loop {
                    args.push(self.expr()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b')') => {
                            self.at += 1;
                            return Ok(Expr::Call(name, args));
                        }
                        _ => return Err(format!("expected `,` or `)` at {}", self.at + 1)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let t = json!({
            "parameters": {
                "Name": {"type": "string", "defaultValue": "gw"},
                "port": {"type": "int", "defaultValue": 443},
                "noDefault": {"type": "string"}
            },
            "variables": {
                "gwId": "[resourceId('Microsoft.Network/applicationGateways', parameters('name'))]",
                "pip": "[format('{0}-pip', parameters('name'))]"
            }
        });
        Scope::new(&t, Some(&json!({"parameters": {"given": {"value": "x"}}})))
    }

    #[test]
    fn expressions_evaluate() {
        let mut s = scope();
        let v = s.resolve(
            &json!({
                "a": "[concat(variables('gwId'), '/frontendPorts/p1')]",
                "b": "[variables('PIP')]",
                "c": "[parameters('port')]",
                "d": "[[literal]",
                "e": "[parameters('given')]",
                "f": "[toLower('AbC')]"
            }),
            "$",
        );
        assert_eq!(
            v["a"],
            "/Microsoft.Network/applicationGateways/gw/frontendPorts/p1"
        );
        assert_eq!(v["b"], "gw-pip");
        assert_eq!(v["c"], 443);
        assert_eq!(v["d"], "[literal]");
        assert_eq!(v["e"], "x");
        assert_eq!(v["f"], "abc");
        assert!(s.unresolved.is_empty(), "{:?}", s.unresolved);
    }

    #[test]
    fn unresolved_values_are_reported_by_path() {
        let mut s = scope();
        let v = s.resolve(
            &json!({"x": ["[parameters('noDefault')]", "[uniqueString('a')]"]}),
            "$",
        );
        assert_eq!(v["x"], json!([null, null]));
        assert_eq!(s.unresolved.len(), 2);
        assert_eq!(s.unresolved[0].path, "$.x[0]");
        assert!(s.unresolved[0].reason.contains("noDefault"));
        assert!(s.unresolved[1].reason.contains("uniquestring"));
    }

    #[test]
    fn property_access_and_quotes() {
        let mut s = scope();
        let v = s.resolve(&json!("[concat('it''s ', resourceGroup().location)]"), "$");
        assert_eq!(v, Value::Null);
        let v = s.resolve(&json!("[concat('it''s', ' ok')]"), "$.y");
        assert_eq!(v, "it's ok");
    }
}
