//! Label and field selectors: the `labelSelector`/`fieldSelector` query syntaxes and `metav1.LabelSelector`,
//! parsed and matched as apimachinery v0.33 (Kubernetes 1.33) `pkg/labels/selector.go` (`labels.Parse`),
//! `pkg/fields/selector.go` (`fields.ParseSelector`) and `pkg/apis/meta/v1/helpers.go` (`LabelSelectorAsSelector`).
//!
//! Parse errors carry upstream's text (e.g. `unable to parse requirement: ...`) as 400 BadRequest [`ApiError`]s.

// `ApiError` is the crate-wide error type callers propagate as-is; its size is not this module's choice.

use crate::error::ApiError;
use crate::validation::{go_string_slice, is_qualified_name, is_valid_label_value};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

// ---------------------------------------------------------------------------------------------------------------
// Label selectors.

/// A label requirement's operator (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// The `selection.Operator` string (`=`, `==`, `!=`, `in`, `notin`, `exists`, `!`, `gt`, `lt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::In => "in",
            Self::NotIn => "notin",
            Self::Exists => "exists",
            Self::DoesNotExist => "!",
            Self::GreaterThan => "gt",
            Self::LessThan => "lt",
        }
    }
}

/// The binary operators in upstream's order, as listed in `found 'x', expected: ...` errors.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// One requirement (`labels.Requirement`): a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// `labels.NewRequirement`: validates the key (qualified name), the value count for the operator, integer
    /// values for `gt`/`lt`, and each value (label value). The error is upstream's aggregated text, e.g.
    /// `values[0][app]: Invalid value: "-x": a valid label must be ...`.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs: Vec<String> = Vec::new();
        if let Some(e) = label_key_error(key, "key") {
            errs.push(e);
        }
        let count_error = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            _ => None,
        };
        if let Some(detail) = count_error {
            // Upstream prints the slice with `%#v`; an empty one there is always nil.
            let shown = if values.is_empty() { "[]string(nil)".to_string() } else { go_values(&values) };
            errs.push(format!("values: Invalid value: {shown}: {detail}"));
        }
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for (i, v) in values.iter().enumerate().filter(|(_, v)| v.parse::<i64>().is_err()) {
                errs.push(format!(
                    "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = is_valid_label_value(v);
            if !msgs.is_empty() {
                errs.push(format!("values[{i}][{key}]: Invalid value: {v:?}: {}", msgs.join("; ")));
            }
        }
        if errs.is_empty() { Ok(Self { key: key.to_string(), operator, values }) } else { Err(aggregate(errs)) }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values as given (the query parser sorts and de-duplicates them).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// `Requirement.Matches`. A label whose value is not a JSON string is treated as absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(|v| self.has_value(v)),
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), [want]) = (value.and_then(|v| v.parse::<i64>().ok()), self.values.as_slice()) else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else { return false };
                if self.operator == Operator::GreaterThan { have > want } else { have < want }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// `Requirement.String()`: `!k`, `k`, `k=v`, `k in (a,b)` (values sorted), ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Exists => return f.write_str(&self.key),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let values = values.join(",");
        match self.operator {
            Operator::In | Operator::NotIn => write!(f, "{}{op}({values})", self.key),
            _ => write!(f, "{}{op}{values}", self.key),
        }
    }
}

/// A label selector: the AND of its requirements, or "nothing" (matches no object).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// `labels.Everything()`: matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// `labels.Nothing()`: matches no object (what a `null` `metav1.LabelSelector` means).
    pub fn nothing() -> Self {
        Self { requirements: Vec::new(), nothing: true }
    }

    /// `labels.Parse`: the query syntax, e.g. `app=web,tier!=db,env in (a,b),!legacy,rev>3`. Errors are 400
    /// BadRequest with upstream's message.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Parser::new(selector).parse().map_err(ApiError::bad_request)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// `metav1.LabelSelectorAsSelector` on the JSON form (`{"matchLabels": {...}, "matchExpressions": [{"key",
    /// "operator": In|NotIn|Exists|DoesNotExist, "values"}]}`). Upstream's distinction is kept: `null` matches
    /// **nothing**, while `{}` (no labels, no expressions) matches **everything**. Use
    /// [`LabelSelector::from_label_selector_field`] for a possibly absent field. Errors (bad shape, unknown
    /// operator, invalid key or value) are 400 BadRequest; validate with
    /// [`crate::validation::validate_label_selector`] first to report field errors instead.
    pub fn from_label_selector_json(selector: &Value) -> Result<Self, ApiError> {
        let obj = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            other => return Err(ApiError::bad_request(format!("label selector must be an object, got {other}"))),
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        return Err(ApiError::bad_request(format!("matchLabels[{k}] must be a string, got {v}")));
                    };
                    requirements.push(
                        Requirement::new(k, Operator::Equals, vec![v.to_string()]).map_err(ApiError::bad_request)?,
                    );
                }
            }
            Some(other) => return Err(ApiError::bad_request(format!("matchLabels must be an object, got {other}"))),
        }
        let exprs = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(other) => {
                return Err(ApiError::bad_request(format!("matchExpressions must be an array, got {other}")));
            }
        };
        for (i, expr) in exprs.iter().enumerate() {
            requirements.push(expression_requirement(expr, i).map_err(ApiError::bad_request)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// [`LabelSelector::from_label_selector_json`] for a field that may be absent: absent is `null` (nothing).
    pub fn from_label_selector_field(selector: Option<&Value>) -> Result<Self, ApiError> {
        Self::from_label_selector_json(selector.unwrap_or(&Value::Null))
    }

    /// `labels.SelectorFromSet` on a plain label map (e.g. a Service's `spec.selector`): `k=v` for each entry,
    /// without validation; non-string values are skipped. As upstream, an empty map matches everything.
    pub fn from_set(set: &Map<String, Value>) -> Self {
        let mut requirements: Vec<Requirement> = set
            .iter()
            .filter_map(|(k, v)| {
                let v = v.as_str()?;
                Some(Requirement { key: k.clone(), operator: Operator::Equals, values: vec![v.to_string()] })
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements, nothing: false }
    }

    /// Whether `labels` (an object's `metadata.labels`; pass an empty map when absent) satisfies every
    /// requirement. A [`LabelSelector::nothing`] selector matches nothing.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// [`LabelSelector::matches`] on a whole object, reading `metadata.labels` (absent or not an object = empty).
    pub fn matches_object(&self, obj: &Value) -> bool {
        match obj.pointer("/metadata/labels").and_then(Value::as_object) {
            Some(labels) => self.matches(labels),
            None => self.matches(&Map::new()),
        }
    }

    /// `Selector.Empty()`: true when the selector does not restrict anything (matches everything). A
    /// [`LabelSelector::nothing`] selector is not empty.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// `labels.MatchesNothing`: true only for [`LabelSelector::nothing`] (e.g. from a `null` `metav1.LabelSelector`).
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// `RequiresExactMatch`: the single value the first requirement on `label` demands (`=`, `==`, or `in` with one
    /// value), if any.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// `Selector.String()`: the requirements joined by `,` (empty for everything and nothing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions` entry as a requirement.
fn expression_requirement(expr: &Value, i: usize) -> Result<Requirement, String> {
    let Some(obj) = expr.as_object() else {
        return Err(format!("matchExpressions[{i}] must be an object, got {expr}"));
    };
    let text = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(format!("matchExpressions[{i}].{name} must be a string, got {other}")),
    };
    let key = text("key")?;
    let op = match text("operator")? {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => return Err(format!("{other:?} is not a valid label selector operator")),
    };
    let values = match obj.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("matchExpressions[{i}].values must be strings, got {v}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("matchExpressions[{i}].values must be an array, got {other}")),
    };
    Requirement::new(key, op, values)
}

/// `validateLabelKey`: `<path>: Invalid value: "<k>": <msgs joined by "; ">`.
fn label_key_error(key: &str, path: &str) -> Option<String> {
    let msgs = is_qualified_name(key);
    if msgs.is_empty() { None } else { Some(format!("{path}: Invalid value: {key:?}: {}", msgs.join("; "))) }
}

fn go_values(values: &[String]) -> String {
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    go_string_slice(&refs)
}

/// `utilerrors.NewAggregate(...).Error()`: one message bare, several de-duplicated inside `[...]`.
fn aggregate(errs: Vec<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 { seen.remove(0) } else { format!("[{}]", seen.join(", ")) }
}

/// The lexer's tokens (`labels.Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// `string2token` for symbols and keywords.
fn keyword_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// A byte-level port of upstream's `Lexer`: a NUL byte reads as end of input, exactly as there.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn text(&self, start: usize, end: usize) -> String {
        String::from_utf8_lossy(self.s.get(start..end).unwrap_or_default()).into_owned()
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let start = self.pos;
        let mut end = start;
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if is_special_symbol(c) || is_whitespace(c) {
                self.unread();
                break;
            }
            end = self.pos;
        }
        let lit = self.text(start, end);
        (keyword_token(lit.as_bytes()).unwrap_or(Token::Identifier), lit)
    }

    /// Longest symbol token (`!=` over `!`, `==` over `=`).
    fn scan_special_symbol(&mut self) -> (Token, String) {
        let start = self.pos;
        let mut last: Option<(Token, usize)> = None;
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if !is_special_symbol(c) {
                self.unread();
                break;
            }
            match keyword_token(self.s.get(start..self.pos).unwrap_or_default()) {
                Some(t) => last = Some((t, self.pos)),
                None if last.is_some() => {
                    self.unread();
                    break;
                }
                None => {}
            }
        }
        // Every single special symbol is a token, so `last` is always set here.
        let (tok, end) = last.unwrap_or((Token::Identifier, self.pos));
        (tok, self.text(start, end))
    }

    fn lex(&mut self) -> (Token, String) {
        let mut c = self.read();
        while is_whitespace(c) {
            c = self.read();
        }
        if c == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special_symbol(c) { self.scan_special_symbol() } else { self.scan_id_or_keyword() }
    }
}

/// Whether `in`/`notin` are keywords (key and operator) or plain identifiers (values).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// Upstream's recursive-descent `Parser` over the scanned tokens.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(selector: &str) -> Self {
        let mut lexer = Lexer { s: selector.as_bytes(), pos: 0 };
        let mut items = Vec::new();
        loop {
            let (tok, lit) = lexer.lex();
            items.push((tok, lit));
            if tok == Token::EndOfString {
                break;
            }
        }
        Self { items, position: 0 }
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (tok, lit) = self.items.get(self.position).cloned().unwrap_or((Token::EndOfString, String::new()));
        match tok {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.lookahead(ctx);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!("found '{l2}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => return Err(format!("found '{lit}', expected: !, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values.into_iter().collect())
    }

    /// The key (after an optional `!`); with nothing but `,` or the end after it, the operator is inferred.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        // Upstream validates the key against a nil path here, hence the `<nil>` field.
        if let Some(e) = label_key_error(&lit, "<nil>") {
            return Err(e);
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    /// `(a,b,...)`; `()` is the single empty value.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty identifiers, up to (not including) `)`. Follows upstream's fix
    /// for repeated commas (`(a,,)` is `{"", "a"}`).
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut s = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    s.insert(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.insert(String::new());
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        s.insert(String::new());
                        return Ok(s);
                    }
                    if tok2 == Token::Comma {
                        s.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value of `=`, `==`, `!=`, `>`, `<`; nothing before `,` or the end is the empty value.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Field selectors.

/// One field-selector term: `field=value` / `field==value`, or `field!=value` when `negated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A field selector (`fields.Selector`): the AND of its terms. No whitespace trimming, as upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// `fields.Everything()`.
    pub fn everything() -> Self {
        Self::default()
    }

    /// `fields.ParseSelector`: comma-separated `k=v`, `k==v`, `k!=v` terms, sorted; values may escape `\,`, `\=`
    /// and `\\`. Terms with an empty field and value (e.g. a lone `=`) are dropped, as upstream's transform does.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_field_value(rhs).map_err(ApiError::bad_request)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm { field: field.to_string(), value, negated: op == "!=" });
        }
        Ok(Self { terms })
    }

    /// Whether every term holds; `get` returns the object's value for a field name (missing = "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| (get(&t.field).unwrap_or_default() == t.value) != t.negated)
    }

    /// `Selector.Empty()`.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms, in upstream's (sorted) order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The field names of the terms, in order (with repeats).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Rejects the first field not in `supported` with upstream's 400 `field label not supported: <name>`.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), ApiError> {
        match self.fields().find(|f| !supported.contains(f)) {
            Some(f) => Err(ApiError::bad_request(format!("field label not supported: {f}"))),
            None => Ok(()),
        }
    }

    /// `RequiresExactMatch`: the value of the first `field=` term (not `!=`), if any.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| !t.negated && t.field == field).map(|t| t.value.as_str())
    }

    /// The value of a `metadata.name=` term, if any (to serve a list or watch by key).
    pub fn exact_name(&self) -> Option<&str> {
        self.requires_exact_match("metadata.name")
    }
}

impl fmt::Display for FieldSelector {
    /// `Selector.String()`: terms joined by `,`, values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// `fields.EscapeValue`: `\` → `\\`, `,` → `\,`, `=` → `\=`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `fields.UnescapeValue`, with upstream's error texts (note the unescaped character is printed as its code point).
fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(format!("invalid field selector: unescaped character in value: {}", c as u32)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// `splitTerms`: splits on commas not escaped by a backslash (escapes kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let (mut start, mut in_slash) = (0, false);
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `splitTerm`: splits at the first `!=`, `==` or `=` (checked in that order at each position).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn parse(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?}: {}", e.message),
        }
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel:?}"),
            Err(e) => {
                assert_eq!(e.code, 400);
                e.message
            }
        }
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        let values = values.iter().map(|v| v.to_string()).collect();
        match Requirement::new(key, op, values) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    // TestSelectorParse: good strings restring without spaces; bad strings fail.
    #[test]
    fn parse_restrings_and_rejects() {
        for s in ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x", "x>1", "x>1,z<5"] {
            assert_eq!(parse(s).to_string(), s.replace(' ', ""), "{s}");
        }
        for s in ["x=a||y=b", "x==a==b", "!x=a", "x<a"] {
            parse_err(s);
        }
        // TestDeterministicParse.
        assert_eq!(parse("x=a,a=x").to_string(), parse("a=x,x=a").to_string());
        assert_eq!(parse("x=a,a=x").to_string(), "a=x,x=a");
    }

    // TestSelectorMatches.
    #[test]
    fn matches() {
        let cases = [
            ("", json!({"x": "y"}), true),
            ("x=y", json!({"x": "y"}), true),
            ("x=y,z=w", json!({"x": "y", "z": "w"}), true),
            ("x!=y,z!=w", json!({"x": "z", "z": "a"}), true),
            ("notin=in", json!({"notin": "in"}), true),
            ("x", json!({"x": "z"}), true),
            ("!x", json!({"y": "z"}), true),
            ("x>1", json!({"x": "2"}), true),
            ("x<1", json!({"x": "0"}), true),
            ("x=z", json!({}), false),
            ("x=y", json!({"x": "z"}), false),
            ("x=y,z=w", json!({"x": "w", "z": "w"}), false),
            ("x!=y,z!=w", json!({"x": "z", "z": "w"}), false),
            ("x", json!({"y": "z"}), false),
            ("!x", json!({"x": "z"}), false),
            ("x>1", json!({"x": "0"}), false),
            ("x<1", json!({"x": "2"}), false),
            ("x>1", json!({"x": "v2"}), false),
            ("x>1", json!({}), false),
            ("x in (a,b)", json!({"x": "b"}), true),
            ("x in (a,b)", json!({}), false),
            ("x notin (a,b)", json!({}), true),
            ("x notin (a,b)", json!({"x": "a"}), false),
            ("x!=a", json!({}), true),
            ("x in ()", json!({"x": ""}), true),
            ("foo=bar,baz=blah", json!({"foo": "bar", "baz": "blah"}), true),
            ("foo=bar,foobar=bar,baz=blah", json!({"foo": "bar", "baz": "blah"}), false),
        ];
        for (sel, set, want) in cases {
            assert_eq!(parse(sel).matches(&labels(set.clone())), want, "{sel} on {set}");
        }
        let sel = parse("app=web");
        assert!(sel.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {}})));
        assert!(parse("!app").matches_object(&json!({})));
        assert!(parse("").is_empty() && LabelSelector::everything().is_empty());
        assert!(!parse("a").is_empty());
    }

    // TestRequirementSelectorMatching.
    #[test]
    fn requirement_matching() {
        let sel = |reqs: Vec<Requirement>| LabelSelector { requirements: reqs, nothing: false };
        let cases = [
            (
                json!({"x": "foo", "y": "baz"}),
                vec![req("x", Operator::In, &["foo"]), req("y", Operator::NotIn, &["alpha"])],
                true,
            ),
            (
                json!({"x": "foo", "y": "baz"}),
                vec![req("x", Operator::In, &["foo"]), req("y", Operator::In, &["alpha"])],
                false,
            ),
            (json!({"y": ""}), vec![req("x", Operator::NotIn, &[""]), req("y", Operator::Exists, &[])], true),
            (json!({"y": ""}), vec![req("x", Operator::DoesNotExist, &[]), req("y", Operator::Exists, &[])], true),
            (json!({"y": ""}), vec![req("x", Operator::NotIn, &[""]), req("y", Operator::DoesNotExist, &[])], false),
            (json!({"y": "baz"}), vec![req("x", Operator::In, &[""])], false),
            (json!({"z": "2"}), vec![req("z", Operator::GreaterThan, &["1"])], true),
            (json!({"z": "v2"}), vec![req("z", Operator::GreaterThan, &["1"])], false),
        ];
        for (set, reqs, want) in cases {
            assert_eq!(sel(reqs).matches(&labels(set.clone())), want, "{set}");
        }
    }

    // TestLexer / TestLexerSequence.
    #[test]
    fn lexer() {
        let single = [
            ("", Token::EndOfString),
            (",", Token::Comma),
            ("notin", Token::NotIn),
            ("in", Token::In),
            ("=", Token::Equals),
            ("==", Token::DoubleEquals),
            (">", Token::GreaterThan),
            ("<", Token::LessThan),
            ("!", Token::DoesNotExist),
            ("!=", Token::NotEquals),
            ("(", Token::OpenPar),
            (")", Token::ClosedPar),
            ("~", Token::Identifier),
            ("||", Token::Identifier),
        ];
        for (s, want) in single {
            let (tok, lit) = Lexer { s: s.as_bytes(), pos: 0 }.lex();
            assert_eq!((tok, lit.as_str()), (want, s));
        }
        use Token::*;
        let sequences: &[(&str, &[Token])] = &[
            ("key in ( value )", &[Identifier, In, OpenPar, Identifier, ClosedPar]),
            ("key notin ( value )", &[Identifier, NotIn, OpenPar, Identifier, ClosedPar]),
            ("key in ( value1, value2 )", &[Identifier, In, OpenPar, Identifier, Comma, Identifier, ClosedPar]),
            ("key", &[Identifier]),
            ("!key", &[DoesNotExist, Identifier]),
            ("()", &[OpenPar, ClosedPar]),
            ("x in (),y", &[Identifier, In, OpenPar, ClosedPar, Comma, Identifier]),
            ("== != (), = notin", &[DoubleEquals, NotEquals, OpenPar, ClosedPar, Comma, Equals, NotIn]),
            ("key>2", &[Identifier, GreaterThan, Identifier]),
            ("key<1", &[Identifier, LessThan, Identifier]),
            ("a!!b", &[Identifier, DoesNotExist, DoesNotExist, Identifier]),
            ("a>=b", &[Identifier, GreaterThan, Equals, Identifier]),
        ];
        for (s, want) in sequences {
            let got: Vec<Token> = Parser::new(s).items.iter().map(|(t, _)| *t).filter(|t| *t != EndOfString).collect();
            assert_eq!(&got, want, "{s}");
        }
        // A NUL byte ends a token, as upstream's `read()` returning 0 does.
        assert_eq!(parse("a=b\0").to_string(), "a=b");
    }

    // TestParseOperator.
    #[test]
    fn parse_operator() {
        for s in ["in", "=", "==", ">", "<", "notin", "!="] {
            assert!(Parser::new(s).parse_operator().is_ok(), "{s}");
        }
        for (s, lit) in [("!", "!"), ("exists", "exists"), ("(", "(")] {
            assert_eq!(
                Parser::new(s).parse_operator(),
                Err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt"))
            );
        }
    }

    // TestRequirementConstructor: the failing cases and their field paths.
    #[test]
    fn requirement_constructor() {
        let err = |key: &str, op: Operator, vals: &[&str]| {
            Requirement::new(key, op, vals.iter().map(|v| v.to_string()).collect()).err().unwrap_or_default()
        };
        assert_eq!(
            err("x1", Operator::In, &[]),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert!(err("x2", Operator::NotIn, &[]).starts_with("values: Invalid value: []string(nil)"));
        assert!(err("x3", Operator::In, &["foo"]).is_empty());
        assert_eq!(
            err("x5", Operator::Equals, &["bar", "foo"]),
            "values: Invalid value: []string{\"bar\", \"foo\"}: exact-match compatibility requires one single value"
        );
        assert!(err("x6", Operator::Exists, &[]).is_empty());
        assert_eq!(
            err("x8", Operator::Exists, &["foo"]),
            "values: Invalid value: []string{\"foo\"}: values set must be empty for exists and does not exist"
        );
        assert!(err("x11", Operator::GreaterThan, &["1"]).is_empty());
        assert!(err("x13", Operator::GreaterThan, &[]).starts_with("values: Invalid value: []string(nil)"));
        assert_eq!(
            err("x14", Operator::GreaterThan, &["bar"]),
            "values[0]: Invalid value: \"bar\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert!(err(&"a".repeat(254), Operator::Exists, &[]).starts_with("key: Invalid value: \"aaa"));
        assert!(err("x16", Operator::Equals, &[&"a".repeat(254)]).starts_with("values[0][x16]: Invalid value: \"aaa"));
        assert!(
            err("x17", Operator::Equals, &["a b"]).starts_with("values[0][x17]: Invalid value: \"a b\": a valid label")
        );
        // Several errors aggregate as `[a, b]`.
        let both = err("x", Operator::GreaterThan, &["-a"]);
        assert!(both.starts_with("[values[0]: Invalid value: \"-a\": for 'Gt'"), "{both}");
        assert!(both.contains(", values[0][x]: Invalid value: \"-a\": a valid label must"), "{both}");
    }

    // TestToString.
    #[test]
    fn to_string() {
        let sel = |reqs: Vec<Requirement>| LabelSelector { requirements: reqs, nothing: false }.to_string();
        assert_eq!(
            sel(vec![
                req("x", Operator::In, &["def", "abc"]),
                req("y", Operator::NotIn, &["jkl"]),
                req("z", Operator::Exists, &[])
            ]),
            "x in (abc,def),y notin (jkl),z"
        );
        assert_eq!(
            sel(vec![
                req("x", Operator::NotIn, &["abc", "def"]),
                req("y", Operator::NotEquals, &["jkl"]),
                req("z", Operator::DoesNotExist, &[])
            ]),
            "x notin (abc,def),y!=jkl,!z"
        );
        assert_eq!(
            sel(vec![
                req("x", Operator::NotIn, &["abc"]),
                req("y", Operator::In, &["jkl", "mno"]),
                req("z", Operator::NotIn, &[""])
            ]),
            "x notin (abc),y in (jkl,mno),z notin ()"
        );
        assert_eq!(
            sel(vec![
                req("x", Operator::Equals, &["abc"]),
                req("y", Operator::DoubleEquals, &["jkl"]),
                req("z", Operator::NotEquals, &["a"]),
                req("z", Operator::Exists, &[])
            ]),
            "x=abc,y==jkl,z!=a,z"
        );
        assert_eq!(
            sel(vec![
                req("x", Operator::GreaterThan, &["2"]),
                req("y", Operator::LessThan, &["8"]),
                req("z", Operator::Exists, &[])
            ]),
            "x>2,y<8,z"
        );
    }

    // TestSetSelectorParser: (input, expected requirements or None for an error).
    #[test]
    fn set_selector_parser() {
        use Operator::*;
        type Want = Option<Vec<(&'static str, Operator, &'static [&'static str])>>;
        let cases: Vec<(&str, Want)> = vec![
            ("", Some(vec![])),
            ("\rx", Some(vec![("x", Exists, &[])])),
            (
                "this-is-a-dns.domain.com/key-with-dash",
                Some(vec![("this-is-a-dns.domain.com/key-with-dash", Exists, &[])]),
            ),
            (
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
                Some(vec![("this-is-another-dns.domain.com/key-with-dash", In, &["so", "what"])]),
            ),
            (
                "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
                Some(vec![("0.1.2.domain/99", NotIn, &["10.10.100.1", "tick.tack.clock"])]),
            ),
            ("foo  in\t (abc)", Some(vec![("foo", In, &["abc"])])),
            ("x notin\n (abc)", Some(vec![("x", NotIn, &["abc"])])),
            ("x  notin\t\t\t(abc,def)", Some(vec![("x", NotIn, &["abc", "def"])])),
            ("x in (abc,def)", Some(vec![("x", In, &["abc", "def"])])),
            ("x in (abc,)", Some(vec![("x", In, &["", "abc"])])),
            ("x in (abc,abc)", Some(vec![("x", In, &["abc"])])),
            ("x in ()", Some(vec![("x", In, &[""])])),
            ("x in (a,,)", Some(vec![("x", In, &["", "a"])])),
            ("x in (a,,,)", Some(vec![("x", In, &["", "a"])])),
            ("x in (a,,,,,,)", Some(vec![("x", In, &["", "a"])])),
            ("x in (a,,a,,a,,a,,)", Some(vec![("x", In, &["", "a"])])),
            (
                "x notin (abc,,def),bar,z in (),w",
                Some(vec![
                    ("bar", Exists, &[]),
                    ("w", Exists, &[]),
                    ("x", NotIn, &["", "abc", "def"]),
                    ("z", In, &[""]),
                ]),
            ),
            ("x,y in (a)", Some(vec![("x", Exists, &[]), ("y", In, &["a"])])),
            ("x=a", Some(vec![("x", Equals, &["a"])])),
            ("x>1", Some(vec![("x", GreaterThan, &["1"])])),
            ("x<7", Some(vec![("x", LessThan, &["7"])])),
            ("x=a,y!=b", Some(vec![("x", Equals, &["a"]), ("y", NotEquals, &["b"])])),
            (
                "x=a,y!=b,z in (h,i,j)",
                Some(vec![("x", Equals, &["a"]), ("y", NotEquals, &["b"]), ("z", In, &["h", "i", "j"])]),
            ),
            ("x=a||y=b", None),
            ("x,,y", None),
            (",x,y", None),
            ("x nott in (y)", None),
            ("x notin ( )", Some(vec![("x", NotIn, &[""])])),
            ("x notin (, a)", Some(vec![("x", NotIn, &["", "a"])])),
            ("a in (xyz),", None),
            ("a in (xyz)b notin ()", None),
            ("a ", Some(vec![("a", Exists, &[])])),
            ("a in (x,y,notin, z,in)", Some(vec![("a", In, &["in", "notin", "x", "y", "z"])])),
            ("a in (xyz abc)", None),
            ("a notin(", None),
            ("a (", None),
            ("(", None),
            ("x==y", Some(vec![("x", DoubleEquals, &["y"])])),
            ("x=in", Some(vec![("x", Equals, &["in"])])),
        ];
        for (input, want) in cases {
            let got = LabelSelector::parse(input).ok().map(|s| {
                s.requirements.iter().map(|r| (r.key.clone(), r.operator, r.values.clone())).collect::<Vec<_>>()
            });
            let want = want.map(|w| {
                w.into_iter()
                    .map(|(k, op, v)| (k.to_string(), op, v.iter().map(|x| x.to_string()).collect::<Vec<_>>()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn parse_error_messages() {
        let key_regex = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
                         with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                         validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(
            parse_err("-a=b"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-a\": {key_regex}")
        );
        assert_eq!(
            parse_err("x=a||y=b"),
            "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": a valid label must be an empty string \
             or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert_eq!(
            parse_err("x<a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be \
             an integer"
        );
        assert_eq!(parse_err("!x=a"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(parse_err("x,,y"), "found ',', expected: identifier after ','");
        assert_eq!(parse_err(",x"), "found ',', expected: !, identifier, or 'end of string'");
        assert_eq!(
            parse_err("x nott in (y)"),
            "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(parse_err("a in (xyz abc)"), "unable to parse requirement: found 'abc', expected: ',' or ')'");
        assert_eq!(parse_err("a notin("), "unable to parse requirement: found '', expected: ',', ')' or identifier");
        assert_eq!(parse_err("a in x"), "unable to parse requirement: found 'x' expected: '('");
        assert_eq!(parse_err("x=("), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(parse_err("!"), "unable to parse requirement: found '', expected: identifier");
        assert_eq!(parse_err("x in (a,="), "unable to parse requirement: found '=', expected: ',', or identifier");
    }

    #[test]
    fn requires_exact_match() {
        assert_eq!(parse("a=b,c!=d").requires_exact_match("a"), Some("b"));
        assert_eq!(parse("a in (b)").requires_exact_match("a"), Some("b"));
        assert_eq!(parse("a in (b,c)").requires_exact_match("a"), None);
        assert_eq!(parse("c!=d").requires_exact_match("c"), None);
        assert_eq!(parse("a=b").requires_exact_match("x"), None);
    }

    #[test]
    fn label_selector_json() {
        let nothing = LabelSelector::from_label_selector_json(&Value::Null).ok();
        assert_eq!(nothing, Some(LabelSelector::nothing()));
        let nothing = LabelSelector::nothing();
        assert!(nothing.matches_nothing() && !nothing.is_empty() && !nothing.matches(&Map::new()));
        assert_eq!(LabelSelector::from_label_selector_field(None).ok(), Some(LabelSelector::nothing()));
        let everything = LabelSelector::from_label_selector_json(&json!({})).ok();
        assert!(everything.as_ref().is_some_and(|s| s.is_empty() && !s.matches_nothing() && s.matches(&Map::new())));
        let empty_parts = json!({"matchLabels": {}, "matchExpressions": []});
        assert!(LabelSelector::from_label_selector_json(&empty_parts).is_ok_and(|s| s.is_empty()));

        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "app", "operator": "Exists"},
        ]});
        let sel = match LabelSelector::from_label_selector_json(&sel) {
            Ok(s) => s,
            Err(e) => panic!("{}", e.message),
        };
        assert_eq!(sel.to_string(), "app=web,app,env notin (dev),!legacy,tier in (be,fe)");
        assert!(sel.matches(&labels(json!({"app": "web", "tier": "fe"}))));
        assert!(!sel.matches(&labels(json!({"app": "web", "tier": "fe", "legacy": "1"}))));
        assert!(!sel.matches(&labels(json!({"app": "web", "tier": "fe", "env": "dev"}))));
        assert!(!sel.matches(&labels(json!({"app": "db", "tier": "fe"}))));

        let err = |v: Value| LabelSelector::from_label_selector_json(&v).err().map(|e| e.message).unwrap_or_default();
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            "\"Gt\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert!(err(json!({"matchLabels": {"a": "-b"}})).starts_with("values[0][a]: Invalid value: \"-b\""));
        assert!(err(json!({"matchLabels": {"-a": "b"}})).starts_with("key: Invalid value: \"-a\""));
        assert!(err(json!({"matchLabels": {"a": 1}})).contains("matchLabels[a] must be a string"));
        assert!(err(json!({"matchExpressions": [7]})).contains("matchExpressions[0] must be an object"));
        assert!(err(json!("app=web")).contains("must be an object"));
    }

    #[test]
    fn from_set() {
        let sel = LabelSelector::from_set(&labels(json!({"b": "2", "a": "1"})));
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches(&labels(json!({"a": "1", "b": "2", "c": "3"}))));
        assert!(LabelSelector::from_set(&Map::new()).is_empty());
    }

    // Field selectors: TestSplitTerms, TestSplitTerm, TestEscapeValue, TestSelectorParse, TestSelectorMatches.
    #[test]
    fn field_split_terms() {
        let cases: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            ("a=avalue", &["a=avalue"]),
            ("a=avalue,b=bvalue", &["a=avalue", "b=bvalue"]),
            ("a=avalue,b==bvalue,c!=cvalue", &["a=avalue", "b==bvalue", "c!=cvalue"]),
            ("", &[]),
            ("a=a,", &["a=a", ""]),
            (",a=a", &["", "a=a"]),
            (r"k=\,,k2=v2", &[r"k=\,", "k2=v2"]),
            (r"k=\\,k2=v2", &[r"k=\\", "k2=v2"]),
            (r"k=\\\,,k2=v2", &[r"k=\\\,", "k2=v2"]),
            (r"k=\a\b\", &[r"k=\a\b\"]),
            (r"k=\", &[r"k=\"]),
            ("함=수,목=록", &["함=수", "목=록"]),
        ];
        for (s, want) in cases {
            assert_eq!(split_terms(s), *want, "{s}");
        }
        let terms = [
            ("a=value", Some(("a", "=", "value"))),
            ("b==value", Some(("b", "==", "value"))),
            ("c!=value", Some(("c", "!=", "value"))),
            ("", None),
            ("a", None),
            (r"k=\,", Some(("k", "=", r"\,"))),
            (r"k=\=", Some(("k", "=", r"\="))),
            (r"k=\\\a\b\=\,\", Some(("k", "=", r"\\\a\b\=\,\"))),
            ("함=수", Some(("함", "=", "수"))),
        ];
        for (s, want) in terms {
            assert_eq!(split_term(s), want, "{s}");
        }
    }

    #[test]
    fn field_escaping() {
        for (raw, escaped) in
            [("", ""), ("a", "a"), ("=", r"\="), (",", r"\,"), (r"\", r"\\"), (r"\=\,\", r"\\\=\\\,\\")]
        {
            assert_eq!(escape_field_value(raw), escaped);
            assert_eq!(unescape_field_value(escaped).as_deref(), Ok(raw));
        }
        assert_eq!(unescape_field_value(r"\"), Err(r"invalid field selector: invalid escape sequence: \".to_string()));
        assert_eq!(
            unescape_field_value(r"\\\"),
            Err(r"invalid field selector: invalid escape sequence: \".to_string())
        );
        assert_eq!(
            unescape_field_value(r"\a"),
            Err(r"invalid field selector: invalid escape sequence: \a".to_string())
        );
        assert_eq!(
            unescape_field_value("a=b"),
            Err("invalid field selector: unescaped character in value: 61".to_string())
        );
    }

    fn fparse(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?}: {}", e.message),
        }
    }

    fn ferr(s: &str) -> String {
        FieldSelector::parse(s).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn field_parse() {
        for s in ["x=a,y=b,z=c", "", "x!=a,y=b", r"x=a||y\=b", r"x=a\=\=b"] {
            assert_eq!(fparse(s).to_string(), s);
        }
        for s in ["x=a||y=b", "x==a==b", "x=a,b", "x in (a)", "x in (a,b,c)", "x"] {
            assert!(!ferr(s).is_empty(), "{s}");
        }
        assert_eq!(fparse("x=a,a=x").to_string(), fparse("a=x,x=a").to_string());
        assert_eq!(ferr("x=a,b"), "invalid selector: 'x=a,b'; can't understand 'b'");
        assert_eq!(ferr("x==a==b"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(ferr(r"x=a\b"), r"invalid field selector: invalid escape sequence: \b");
        // No trimming; a lone `=` is dropped; `x==y` is `x=y`.
        assert_eq!(fparse("a = b").terms()[0], FieldTerm { field: "a ".into(), value: " b".into(), negated: false });
        assert!(fparse("=,").is_empty());
        assert_eq!(fparse("x==y").to_string(), "x=y");
        assert_eq!(fparse("=v").fields().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn field_matches() {
        let set = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(f, _)| *f == k).map(|(_, v)| v.to_string())
        };
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(&str, Fields, bool)] = &[
            ("", &[("x", "y")], true),
            ("x=y", &[("x", "y")], true),
            ("x=y,z=w", &[("x", "y"), ("z", "w")], true),
            ("x!=y,z!=w", &[("x", "z"), ("z", "a")], true),
            ("notin=in", &[("notin", "in")], true),
            ("x=y", &[("x", "z")], false),
            ("x=y,z=w", &[("x", "w"), ("z", "w")], false),
            ("x!=y,z!=w", &[("x", "z"), ("z", "w")], false),
            ("x=", &[], true),
            ("x!=", &[], false),
            ("foo=bar,baz=blah", &[("foo", "bar"), ("baz", "blah")], true),
            (r"complex=\=value\\\,\\", &[("complex", r"=value\,\")], true),
            ("foo=bar,foobar=bar", &[("foo", "bar")], false),
        ];
        for &(sel, pairs, want) in cases {
            assert_eq!(fparse(sel).matches(set(pairs)), want, "{sel}");
        }
    }

    #[test]
    fn field_supported_and_exact_match() {
        let sel = fparse("metadata.name=web,spec.nodeName=n1,metadata.namespace!=kube-system");
        assert_eq!(sel.fields().collect::<Vec<_>>(), ["metadata.name", "metadata.namespace", "spec.nodeName"]);
        assert_eq!(sel.exact_name(), Some("web"));
        assert_eq!(sel.requires_exact_match("metadata.namespace"), None);
        assert!(sel.check_supported(&["metadata.name", "metadata.namespace", "spec.nodeName"]).is_ok());
        let err = sel.check_supported(&["metadata.name", "metadata.namespace"]).err();
        assert_eq!(
            err.as_ref().map(|e| (e.code, e.message.as_str())),
            Some((400, "field label not supported: spec.nodeName"))
        );
        assert_eq!(fparse("metadata.name!=x").exact_name(), None);
        assert_eq!(fparse("metadata.name==").exact_name(), Some(""));
        assert!(FieldSelector::everything().check_supported(&[]).is_ok());
    }
}
