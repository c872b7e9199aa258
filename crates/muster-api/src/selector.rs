//! Label and field selectors: parsing and matching.
//!
//! Label selectors come from a query string (`app=nginx,tier in (web,api),!canary`) or from a
//! `metav1.LabelSelector` object (`matchLabels`/`matchExpressions`); both produce the same
//! [`LabelSelector`]. Field selectors (`metadata.name=x,status.phase!=Running`) are checked
//! against the per-kind field labels Kubernetes supports ([`field_value`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};
use crate::strategy::{is_qualified_name, is_valid_label_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=`
    Equals,
    /// `==` (kept apart so the string form round-trips)
    DoubleEquals,
    /// `!=`
    NotEquals,
    In,
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>1`
    GreaterThan,
    /// `key<1`
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated, as Kubernetes keeps them.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement with Kubernetes' `NewRequirement` checks; the error is the message.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {key:?}: {}",
                key_errs.join("; ")
            ));
        }
        let shown = format!(
            "[]string{{{}}}",
            values
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(format!(
                "values: Invalid value: {shown}: for 'in', 'notin' operators, values set can't be empty"
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(format!(
                    "values: Invalid value: {shown}: exact-match compatibility requires one single value"
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
                "values: Invalid value: {shown}: values set must be empty for exists and does not exist"
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {shown}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = is_valid_label_value(v);
            if !value_errs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {}",
                    value_errs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            return Err(if errs.len() == 1 {
                errs.remove(0)
            } else {
                format!("[{}]", errs.join(", "))
            });
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn matches(&self, labels: &dyn Labels) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        let one = self.values.first().map(String::as_str).unwrap_or("");
        let set = self.values.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{k}={one}"),
            Operator::DoubleEquals => write!(f, "{k}=={one}"),
            Operator::NotEquals => write!(f, "{k}!={one}"),
            Operator::In => write!(f, "{k} in ({set})"),
            Operator::NotIn => write!(f, "{k} notin ({set})"),
            Operator::Exists => write!(f, "{k}"),
            Operator::DoesNotExist => write!(f, "!{k}"),
            Operator::GreaterThan => write!(f, "{k}>{one}"),
            Operator::LessThan => write!(f, "{k}<{one}"),
        }
    }
}

/// Anything labels can be read from.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A parsed label selector. No requirements selects everything; [`LabelSelector::nothing`]
/// (a `null` selector object) selects nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Sorted by key (Kubernetes' order, also used by `Display`).
    pub requirements: Vec<Requirement>,
    pub selects_nothing: bool,
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            selects_nothing: true,
        }
    }

    pub fn is_everything(&self) -> bool {
        !self.selects_nothing && self.requirements.is_empty()
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            selects_nothing: false,
        }
    }

    pub fn matches(&self, labels: &dyn Labels) -> bool {
        !self.selects_nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.matches(labels)
    }

    /// A `metav1.LabelSelector` object. `null` selects nothing, `{}` everything (Kubernetes'
    /// `LabelSelectorAsSelector`). Errors are 400s naming the bad part.
    pub fn from_json(sel: &Value) -> ApiResult<Self> {
        if sel.is_null() {
            return Ok(Self::nothing());
        }
        let bad = |m: String| ApiError::bad_request(m);
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                let v = v.as_str().unwrap_or_default().to_string();
                reqs.push(Requirement::new(k, Operator::Equals, vec![v]).map_err(bad)?);
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                let values = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(bad(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                reqs.push(Requirement::new(key, op, values).map_err(bad)?);
            }
        }
        Ok(Self::from_requirements(reqs))
    }

    /// A plain label map such as a Service's `spec.selector` (`None` or empty selects
    /// everything, which callers usually treat specially).
    pub fn from_map(map: &Map<String, Value>) -> Self {
        let reqs = map
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.as_str().unwrap_or_default().to_string()],
            })
            .collect();
        Self::from_requirements(reqs)
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = ApiError;

    fn from_str(s: &str) -> ApiResult<Self> {
        parse_label_selector(s)
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = ApiError;

    fn from_str(s: &str) -> ApiResult<Self> {
        parse_field_selector(s)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn literal(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Not => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::End => "".into(),
        }
    }
}

fn lex(s: &str) -> Vec<Token> {
    let special = |c: char| "!=<>(),".contains(c) || c.is_whitespace();
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let tok = match (two.as_str(), c) {
            ("==", _) => Some((Token::DoubleEq, 2)),
            ("!=", _) => Some((Token::NotEq, 2)),
            (_, '!') => Some((Token::Not, 1)),
            (_, '=') => Some((Token::Eq, 1)),
            (_, '>') => Some((Token::Gt, 1)),
            (_, '<') => Some((Token::Lt, 1)),
            (_, '(') => Some((Token::Open, 1)),
            (_, ')') => Some((Token::Close, 1)),
            (_, ',') => Some((Token::Comma, 1)),
            _ => None,
        };
        if let Some((t, n)) = tok {
            out.push(t);
            i += n;
            continue;
        }
        let start = i;
        while i < chars.len() && !special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out.push(Token::End);
    out
}

/// A recursive-descent parser over the tokens, following Kubernetes' `labels.Parse` (its
/// error messages included).
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    /// The next token; `in`/`notin` read as identifiers where a value is expected, as in
    /// Kubernetes (so `app=in` selects the value "in").
    fn peek(&self, values: bool) -> Token {
        let t = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        match t {
            Token::In | Token::NotIn if values => Token::Ident(t.literal()),
            t => t,
        }
    }

    fn next(&mut self, values: bool) -> Token {
        let t = self.peek(values);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek(true) {
                Token::Ident(_) | Token::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.next(true) {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let t = self.peek(true);
                            if !matches!(t, Token::Ident(_) | Token::Not) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Token::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut tok = self.next(true);
        let negated = tok == Token::Not;
        if negated {
            tok = self.next(true);
        }
        let Token::Ident(key) = tok else {
            return Err(format!("found '{}', expected: identifier", tok.literal()));
        };
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let op = match self.next(false) {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Eq => Operator::Equals,
            Token::DoubleEq => Operator::DoubleEquals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                ));
            }
        };
        let values = if matches!(op, Operator::In | Operator::NotIn) {
            self.value_set()?
        } else {
            vec![self.exact_value()?]
        };
        Requirement::new(&key, op, values)
    }

    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next(true) {
            Token::Ident(v) => Ok(v),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }

    /// `(a,b,c)`; empty entries are empty strings, `()` is `[""]`.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        let open = self.next(true);
        if open != Token::Open {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        let first = self.peek(true);
        match first {
            Token::Close => {
                self.next(true);
                return Ok(vec![String::new()]);
            }
            Token::Ident(_) | Token::Comma => {}
            t => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    t.literal()
                ));
            }
        }
        let mut values = Vec::new();
        loop {
            match self.next(true) {
                Token::Ident(v) => {
                    values.push(v);
                    match self.peek(true) {
                        Token::Comma => continue,
                        Token::Close => break,
                        t => {
                            return Err(format!("found '{}', expected: ',' or ')'", t.literal()));
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek(true) {
                        Token::Close => {
                            values.push(String::new());
                            break;
                        }
                        Token::Comma => {
                            self.next(true);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
        match self.next(true) {
            Token::Close => Ok(values),
            _ => Err(format!("found '{}', expected: ')'", first.literal())),
        }
    }
}

/// Parses the query-string form of a label selector; errors are 400 BadRequest with
/// Kubernetes' parser messages.
pub fn parse_label_selector(s: &str) -> ApiResult<LabelSelector> {
    let mut parser = Parser {
        tokens: lex(s),
        pos: 0,
    };
    let reqs = parser.selector().map_err(ApiError::bad_request)?;
    Ok(LabelSelector::from_requirements(reqs))
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// A 400 for a field the kind has no field label for: `field label not supported: <field>`
    /// for kinds with their own field labels, Kubernetes' default message for the others.
    pub fn check_supported(&self, rt: &ResourceType) -> ApiResult<()> {
        let probe = Value::Object(Map::new());
        for r in &self.requirements {
            if field_value(rt, &probe, &r.field).is_some() {
                continue;
            }
            let own_labels = matches!(
                (rt.group, rt.kind),
                (
                    "",
                    "Pod" | "Node" | "Event" | "Namespace" | "Secret" | "Service"
                ) | ("apps", "ReplicaSet" | "StatefulSet")
                    | ("events.k8s.io", "Event")
            );
            let message = if own_labels {
                format!("field label not supported: {}", r.field)
            } else {
                format!(
                    "{:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    r.field
                )
            };
            return Err(ApiError::bad_request(message));
        }
        Ok(())
    }

    /// Whether `obj` (in its stored form) satisfies every term; unsupported fields never match.
    pub fn matches(&self, rt: &ResourceType, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| field_value(rt, obj, &r.field).is_some_and(|v| (v == r.value) == r.equals))
    }

    /// The value a term pins `field` to with `=` (used to narrow `metadata.name=x` lookups).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equals && r.field == field)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| {
                let op = if r.equals { "=" } else { "!=" };
                format!("{}{op}{}", r.field, escape_field_value(&r.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn escape_field_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Splits on `sep` outside backslash escapes.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape_field_value(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence: \\{e}")),
                None => return Err("invalid escape sequence: \\".into()),
            },
            // Go prints the offending rune with %v, i.e. as its number.
            ',' | '=' => return Err(format!("unescaped character in value: {}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Parses `a=b,c!=d,e==f` (values may escape `\,` `\=` `\\`).
pub fn parse_field_selector(s: &str) -> ApiResult<FieldSelector> {
    let mut requirements = Vec::new();
    if s.trim().is_empty() {
        return Ok(FieldSelector::default());
    }
    for term in split_unescaped(s, ',') {
        if term.is_empty() {
            continue;
        }
        let bad = || {
            ApiError::bad_request(format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            ))
        };
        // The first operator from the left wins, as in Kubernetes' `splitTerm`.
        let split = term.char_indices().find_map(|(i, _)| {
            let rest = &term[i..];
            ["!=", "==", "="]
                .iter()
                .find(|op| rest.starts_with(**op))
                .map(|op| (&term[..i], *op != "!=", &rest[op.len()..]))
        });
        let Some((field, equals, raw)) = split else {
            return Err(bad());
        };
        let value = unescape_field_value(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        requirements.push(FieldRequirement {
            field: field.to_string(),
            equals,
            value,
        });
    }
    Ok(FieldSelector { requirements })
}

fn text_at(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The value of a field label of `obj` (stored form; events are stored as core/v1), or
/// `None` if Kubernetes supports no such field selector for the kind. Missing fields read as
/// `""` (`"false"`/`"0"` for booleans and counts), as in Kubernetes' field sets.
pub fn field_value(rt: &ResourceType, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(text_at(obj, "/metadata/name")),
        "metadata.namespace" => return Some(text_at(obj, "/metadata/namespace")),
        _ => {}
    }
    let v = match (rt.group, rt.kind, field) {
        ("", "Pod", "spec.nodeName") => text_at(obj, "/spec/nodeName"),
        ("", "Pod", "spec.restartPolicy") => text_at(obj, "/spec/restartPolicy"),
        ("", "Pod", "spec.schedulerName") => text_at(obj, "/spec/schedulerName"),
        ("", "Pod", "spec.serviceAccountName") => text_at(obj, "/spec/serviceAccountName"),
        ("", "Pod", "spec.hostNetwork") => bool_at(obj, "/spec/hostNetwork"),
        ("", "Pod", "status.phase") => text_at(obj, "/status/phase"),
        ("", "Pod", "status.podIP") => text_at(obj, "/status/podIP"),
        ("", "Pod", "status.nominatedNodeName") => text_at(obj, "/status/nominatedNodeName"),
        ("", "Node", "spec.unschedulable") => bool_at(obj, "/spec/unschedulable"),
        ("", "Namespace", "status.phase") => text_at(obj, "/status/phase"),
        ("", "Secret", "type") => text_at(obj, "/type"),
        ("", "Service", "spec.clusterIP") => text_at(obj, "/spec/clusterIP"),
        ("", "Service", "spec.type") => text_at(obj, "/spec/type"),
        ("apps", "ReplicaSet", "status.replicas") => obj
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        ("", "Event", f) => core_event_field(obj, f)?,
        ("events.k8s.io", "Event", f) => {
            // events.k8s.io names for the same stored (core/v1) fields.
            let core = match f {
                "reportingController" => "reportingComponent".to_string(),
                "deprecatedSource" => "source".to_string(),
                f => match f.strip_prefix("regarding.") {
                    Some(rest) => format!("involvedObject.{rest}"),
                    None if f == "type" || f == "reason" => f.to_string(),
                    None => return None,
                },
            };
            core_event_field(obj, &core)?
        }
        _ => return None,
    };
    Some(v)
}

fn core_event_field(obj: &Value, field: &str) -> Option<String> {
    Some(match field {
        "involvedObject.kind"
        | "involvedObject.namespace"
        | "involvedObject.name"
        | "involvedObject.uid"
        | "involvedObject.apiVersion"
        | "involvedObject.resourceVersion"
        | "involvedObject.fieldPath" => {
            let sub = field.trim_start_matches("involvedObject.");
            text_at(obj, &format!("/involvedObject/{sub}"))
        }
        "reason" => text_at(obj, "/reason"),
        "reportingComponent" => text_at(obj, "/reportingComponent"),
        "source" => text_at(obj, "/source/component"),
        "type" => text_at(obj, "/type"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_print_and_match() {
        let web = labels(&[("app", "nginx"), ("tier", "web"), ("n", "5")]);
        let none = labels(&[]);
        // (selector, canonical string, matches `web`, matches no labels)
        let cases = [
            ("", "", true, true),
            ("app=nginx", "app=nginx", true, false),
            ("app == nginx", "app==nginx", true, false),
            ("app!=nginx", "app!=nginx", false, true),
            ("tier in (web, api)", "tier in (api,web)", true, false),
            ("tier notin (web)", "tier notin (web)", false, true),
            ("app", "app", true, false),
            ("!app", "!app", false, true),
            ("tier,app=nginx", "app=nginx,tier", true, false),
            ("n>3,n<9", "n>3,n<9", true, false),
            ("app=", "app=", false, false),
            ("example.com/role=db", "example.com/role=db", false, false),
            ("tier in ()", "tier in ()", false, false),
            ("tier in (web,)", "tier in (,web)", true, false),
            ("app=in", "app=in", false, false),
        ];
        for (input, canonical, matches_web, matches_none) in cases {
            let sel = parse_label_selector(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), canonical, "{input}");
            assert_eq!(sel.matches(&web), matches_web, "{input} vs web");
            assert_eq!(sel.matches(&none), matches_none, "{input} vs none");
            assert_eq!(
                parse_label_selector(canonical).unwrap(),
                sel,
                "{canonical} round trip"
            );
        }
    }

    #[test]
    fn bad_label_selectors_are_400() {
        let cases = [
            (
                "app in nginx",
                "unable to parse requirement: found 'nginx' expected: '('",
            ),
            (
                "app in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "app in (a",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("app=a,", "found '', expected: identifier after ','"),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "n>x",
                "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            (
                "-a=x",
                "unable to parse requirement: key: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                "app=a%b",
                "unable to parse requirement: values[0][app]: Invalid value: \"a%b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
        ];
        for (input, message) in cases {
            let e = parse_label_selector(input).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (400, message), "{input}");
        }
    }

    #[test]
    fn label_selector_objects() {
        let pod = labels(&[("app", "nginx"), ("tier", "web")]);
        // (metav1.LabelSelector, string form, matches `pod`)
        let cases = [
            (json!({"matchLabels":{"app":"nginx"}}), "app=nginx", true),
            (
                json!({"matchLabels":{"app":"nginx"},"matchExpressions":[{"key":"tier","operator":"In","values":["web","api"]}]}),
                "app=nginx,tier in (api,web)",
                true,
            ),
            (
                json!({"matchExpressions":[{"key":"tier","operator":"NotIn","values":["web"]}]}),
                "tier notin (web)",
                false,
            ),
            (
                json!({"matchExpressions":[{"key":"canary","operator":"DoesNotExist"}]}),
                "!canary",
                true,
            ),
            (
                json!({"matchExpressions":[{"key":"app","operator":"Exists"}]}),
                "app",
                true,
            ),
            (json!({}), "", true),
            (json!(null), "", false),
        ];
        for (obj, text, matches) in cases {
            let sel = LabelSelector::from_json(&obj).unwrap();
            assert_eq!(sel.to_string(), text, "{obj}");
            assert_eq!(sel.matches(&pod), matches, "{obj}");
        }
        let e =
            LabelSelector::from_json(&json!({"matchExpressions":[{"key":"a","operator":"Near"}]}))
                .unwrap_err();
        assert_eq!(e.message, "\"Near\" is not a valid label selector operator");
        let from_map = LabelSelector::from_map(json!({"app":"nginx"}).as_object().unwrap());
        assert!(from_map.matches_object(&json!({"metadata":{"labels":{"app":"nginx"}}})));
        assert!(!from_map.matches_object(&json!({"metadata":{}})));
    }

    #[test]
    fn field_selectors() {
        let pods = find("", "v1", "pods").unwrap();
        let events = find("", "v1", "events").unwrap();
        let new_events = find("events.k8s.io", "v1", "events").unwrap();
        let pod = json!({"metadata":{"name":"web-0","namespace":"default"},"spec":{"nodeName":"node-1"},"status":{"phase":"Running","podIP":"10.244.0.7"}});
        let event = json!({"metadata":{"name":"e","namespace":"default"},"involvedObject":{"kind":"Service","name":"nginx","namespace":"default","uid":"u1"},"reason":"Created","type":"Normal","source":{"component":"kubelet"}});
        // (resource, selector, object, matches)
        let cases = [
            (pods, "metadata.name=web-0", &pod, true),
            (pods, "metadata.name==web-1", &pod, false),
            (pods, "status.phase!=Running", &pod, false),
            (
                pods,
                "spec.nodeName=node-1,status.podIP=10.244.0.7",
                &pod,
                true,
            ),
            (pods, "spec.hostNetwork=false", &pod, true),
            (
                events,
                "involvedObject.uid=u1,involvedObject.kind=Service,involvedObject.namespace=default,involvedObject.name=nginx",
                &event,
                true,
            ),
            (events, "source=kubelet,type=Normal", &event, true),
            (
                new_events,
                "regarding.name=nginx,reason=Created",
                &event,
                true,
            ),
            (events, "reason=Killing", &event, false),
        ];
        for (rt, input, obj, matches) in cases {
            let sel = parse_field_selector(input).unwrap();
            sel.check_supported(rt)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.matches(rt, obj), matches, "{input}");
        }
        let e = parse_field_selector("spec.foo=x")
            .unwrap()
            .check_supported(pods)
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.foo")
        );
        let deployments = find("apps", "v1", "deployments").unwrap();
        let e = parse_field_selector("spec.replicas=1")
            .unwrap()
            .check_supported(deployments)
            .unwrap_err();
        assert_eq!(
            e.message,
            "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let e = parse_field_selector("nonsense").unwrap_err();
        assert_eq!(
            e.message,
            "invalid selector: 'nonsense'; can't understand 'nonsense'"
        );
        let e = parse_field_selector("a=b!=c").unwrap_err();
        assert_eq!(
            e.message,
            "invalid field selector: unescaped character in value: 61"
        );
        let e = parse_field_selector(r"metadata.name=a\x").unwrap_err();
        assert_eq!(
            e.message,
            r"invalid field selector: invalid escape sequence: \x"
        );
        let escaped: FieldSelector = r"metadata.name=a\,b".parse().unwrap();
        assert_eq!(escaped.exact("metadata.name"), Some("a,b"));
        assert_eq!(escaped.to_string(), r"metadata.name=a\,b");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("app".to_string()),
            Just("tier".to_string()),
            Just("example.com/role".to_string()),
            Just("n".to_string()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("x-1".to_string()),
            Just("".to_string()),
        ]
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        let op = prop_oneof![
            Just(Operator::Equals),
            Just(Operator::DoubleEquals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ];
        (key(), op, proptest::collection::vec(value(), 1..4)).prop_map(|(k, op, vals)| {
            let vals = match op {
                Operator::Exists | Operator::DoesNotExist => Vec::new(),
                Operator::In | Operator::NotIn => vals,
                _ => vec![vals[0].clone()],
            };
            Requirement::new(&k, op, vals).unwrap()
        })
    }

    fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map(key(), value(), 0..4)
    }

    /// The meaning of one requirement, written independently of `Requirement::matches`.
    fn holds(r: &Requirement, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&r.key);
        let in_set = v.is_some_and(|v| r.values.contains(v));
        match r.operator {
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::Equals | Operator::DoubleEquals | Operator::In => in_set,
            Operator::NotEquals | Operator::NotIn => !in_set,
            Operator::GreaterThan | Operator::LessThan => unreachable!(),
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(reqs in proptest::collection::vec(requirement(), 0..5),
                                          labels in labels()) {
            let sel = LabelSelector::from_requirements(reqs.clone());
            let text = sel.to_string();
            let parsed = parse_label_selector(&text).unwrap();
            prop_assert_eq!(&parsed, &sel, "{}", text);
            let expected = reqs.iter().all(|r| holds(r, &labels));
            prop_assert_eq!(parsed.matches(&labels), expected, "{} on {:?}", text, labels);
        }

        #[test]
        fn parsing_never_panics(s in "[a-z=!(), ]{0,20}") {
            let _ = parse_label_selector(&s);
            let _ = parse_field_selector(&s);
        }
    }
}
