//! Reads and writes: which requests of a route are reads (mirrored and
//! compared, never dual-written) and which are writes. A safe method is
//! always a read; a route may declare other methods reads (`reads =
//! ["POST"]`, a search endpoint), and on a GraphQL route (`graphql = true`)
//! the body decides: an operation that is a `query` is a read, a
//! `mutation` (or anything that cannot be read as a query) a write.
//!
//! Must never: call a request a read that might change state: a GraphQL
//! body that cannot be parsed, names no operation, or batches a mutation
//! is a write.

use http::Method;

use super::{is_safe, Route};

/// What the method alone says about a request on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A GraphQL route's method: read or write by the operation in the body.
    ByBody,
}

/// Whether a request is a read before its body is known.
pub fn access(route: Option<&Route>, method: &Method) -> Access {
    if is_safe(method) {
        return Access::Read;
    }
    match route {
        Some(route) if route.reads.contains(method) => {
            if route.graphql {
                Access::ByBody
            } else {
                Access::Read
            }
        }
        _ => Access::Write,
    }
}

/// Whether a request, with its body, is a read on its route.
pub fn is_read(route: Option<&Route>, method: &Method, body: &[u8]) -> bool {
    match access(route, method) {
        Access::Read => true,
        Access::Write => false,
        Access::ByBody => graphql_reads_only(body),
    }
}

/// A GraphQL operation's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Query,
    Mutation,
    Subscription,
}

/// Whether a GraphQL request body (JSON `{"query", "operationName"}`, a
/// batch of them, or a bare `application/graphql` document) runs only
/// queries.
pub fn graphql_reads_only(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(batch)) => !batch.is_empty() && batch.iter().all(is_query_request),
        Ok(request @ serde_json::Value::Object(_)) => is_query_request(&request),
        Ok(_) => false,
        Err(_) => {
            std::str::from_utf8(body).is_ok_and(|document| selected_operation(document, None) == Some(Operation::Query))
        }
    }
}

fn is_query_request(request: &serde_json::Value) -> bool {
    let Some(document) = request.get("query").and_then(serde_json::Value::as_str) else {
        // A persisted query sends only a hash: what it runs is unknown here.
        return false;
    };
    let name = match request.get("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => Some(name.as_str()),
        Some(_) => return false,
    };
    selected_operation(document, name) == Some(Operation::Query)
}

/// The type of the operation a document runs: the one named, or its only
/// one. `None` when the document cannot be read, or the choice is unclear.
pub fn selected_operation(document: &str, name: Option<&str>) -> Option<Operation> {
    let operations = operations(document)?;
    match name {
        Some(name) => operations
            .iter()
            .find(|(_, op_name)| op_name.as_deref() == Some(name))
            .map(|(kind, _)| *kind),
        None => match operations.as_slice() {
            [(kind, _)] => Some(*kind),
            _ => None,
        },
    }
}

/// A document's tokens as far as operations need them.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Name(&'a str),
    Punct(char),
    /// A string, number or `...`: nothing an operation's type depends on.
    Other,
}

/// The operations a GraphQL document defines, with their names; `None`
/// when it is not an executable document this reader understands.
fn operations(document: &str) -> Option<Vec<(Operation, Option<String>)>> {
    let tokens = tokens(document)?;
    let mut found = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let kind = match tokens[index] {
            Token::Punct('{') => Some(Operation::Query),
            Token::Name("query") => Some(Operation::Query),
            Token::Name("mutation") => Some(Operation::Mutation),
            Token::Name("subscription") => Some(Operation::Subscription),
            Token::Name("fragment") => None,
            _ => return None,
        };
        let shorthand = tokens[index] == Token::Punct('{');
        let mut name = None;
        if !shorthand {
            index += 1;
            if let (Some(_), Some(Token::Name(op_name))) = (kind, tokens.get(index)) {
                name = Some((*op_name).to_string());
            }
        }
        // The header (name, variables with their defaults, directives) runs
        // to the selection set: the first `{` outside parentheses.
        let mut parens = 0usize;
        while let Some(token) = tokens.get(index) {
            match token {
                Token::Punct('(') => parens += 1,
                Token::Punct(')') => parens = parens.checked_sub(1)?,
                Token::Punct('{') if parens == 0 => break,
                _ => {}
            }
            index += 1;
        }
        let mut braces = 0usize;
        loop {
            match tokens.get(index)? {
                Token::Punct('{') => braces += 1,
                Token::Punct('}') => {
                    braces = braces.checked_sub(1)?;
                    if braces == 0 {
                        index += 1;
                        break;
                    }
                }
                _ => {}
            }
            index += 1;
        }
        if let Some(kind) = kind {
            found.push((kind, name));
        }
    }
    (!found.is_empty()).then_some(found)
}

/// GraphQL's lexical grammar, reduced: ignored tokens (white space,
/// commas, comments, a byte order mark) skipped, strings and block strings
/// passed over with their escapes, names and punctuators kept.
fn tokens(document: &str) -> Option<Vec<Token<'_>>> {
    let bytes = document.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => at += 1,
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                at += 3;
                loop {
                    if at >= bytes.len() {
                        return None;
                    }
                    if bytes[at..].starts_with(b"\\\"\"\"") {
                        at += 4;
                    } else if bytes[at..].starts_with(b"\"\"\"") {
                        at += 3;
                        break;
                    } else {
                        at += 1;
                    }
                }
                tokens.push(Token::Other);
            }
            b'"' => {
                at += 1;
                loop {
                    match bytes.get(at)? {
                        b'"' => break,
                        b'\\' => at += 2,
                        b'\n' | b'\r' => return None,
                        _ => at += 1,
                    }
                }
                at += 1;
                tokens.push(Token::Other);
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = at;
                while at < bytes.len() && (bytes[at] == b'_' || bytes[at].is_ascii_alphanumeric()) {
                    at += 1;
                }
                tokens.push(Token::Name(&document[start..at]));
            }
            b'-' | b'0'..=b'9' | b'.' | b'+' => {
                at += 1;
                while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || matches!(bytes[at], b'.' | b'+' | b'-'))
                {
                    at += 1;
                }
                tokens.push(Token::Other);
            }
            b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|' | b'}' => {
                tokens.push(Token::Punct(char::from(byte)));
                at += 1;
            }
            _ if document[at..].starts_with('\u{feff}') => at += '\u{feff}'.len_utf8(),
            _ => return None,
        }
    }
    Some(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_told_apart_by_keyword_name_and_shorthand() {
        assert_eq!(
            selected_operation("{ task(id: 1) { title } }", None),
            Some(Operation::Query)
        );
        assert_eq!(
            selected_operation("query Task($id: ID = 1) @cached { task(id: $id) { title } }", None),
            Some(Operation::Query)
        );
        assert_eq!(
            selected_operation("mutation { addTask(title: \"x\") { id } }", None),
            Some(Operation::Mutation)
        );
        assert_eq!(
            selected_operation("subscription OnTask { taskAdded { id } }", None),
            Some(Operation::Subscription)
        );
        let both = "query Read { a } mutation Write { b(x: {y: \"}\"}) }";
        assert_eq!(selected_operation(both, Some("Read")), Some(Operation::Query));
        assert_eq!(selected_operation(both, Some("Write")), Some(Operation::Mutation));
        assert_eq!(selected_operation(both, None), None, "two operations and no name");
        assert_eq!(selected_operation(both, Some("Other")), None);
    }

    #[test]
    fn fragments_comments_strings_and_defaults_do_not_confuse_the_reader() {
        let document = r#"
            # mutation in a comment
            fragment Fields on mutation { title note(text: "mutation { x }") }
            query List($filter: Filter = {state: "open", tags: ["a", "b"]}) {
                tasks(filter: $filter) { ...Fields description(format: """block "mutation" \""" text""") }
            }
        "#;
        assert_eq!(selected_operation(document, None), Some(Operation::Query));
        assert_eq!(selected_operation("\u{feff}{ a }", None), Some(Operation::Query));
    }

    #[test]
    fn what_cannot_be_read_is_not_a_query() {
        for broken in [
            "",
            "fragment F on T { a }",
            "{ a ",
            "query { a } }",
            "query Q(a { b }",
            "{ a(x: \"unterminated) }",
            "type Query { a: Int }",
            "{ a } ?",
        ] {
            assert_eq!(selected_operation(broken, None), None, "{broken:?}");
        }
    }

    #[test]
    fn bodies_batches_and_persisted_queries_are_writes_unless_all_queries() {
        assert!(graphql_reads_only(br#"{"query": "{ tasks { id } }"}"#));
        assert!(graphql_reads_only(
            br#"{"query": "query A { a } mutation B { b }", "operationName": "A", "variables": {}}"#
        ));
        assert!(!graphql_reads_only(
            br#"{"query": "query A { a } mutation B { b }", "operationName": "B"}"#
        ));
        assert!(graphql_reads_only(br#"[{"query": "{ a }"}, {"query": "query { b }"}]"#));
        assert!(!graphql_reads_only(
            br#"[{"query": "{ a }"}, {"query": "mutation { b }"}]"#
        ));
        assert!(!graphql_reads_only(b"[]"));
        assert!(!graphql_reads_only(
            br#"{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}"#
        ));
        assert!(!graphql_reads_only(br#"{"query": "{ a }", "operationName": 7}"#));
        assert!(
            graphql_reads_only(b"query { tasks { id } }"),
            "an application/graphql body"
        );
        assert!(!graphql_reads_only(b"mutation { a }"));
        assert!(!graphql_reads_only(b"\xff\xfe"));
    }
}
