//! NATS subjects of the NATS sink (`[[sinks]] subject`, parsed with the config): the template,
//! how values become subject tokens, and whether a stream's subject filter captures every
//! subject the template can produce.
//!
//! A template is dot-separated tokens; each is literal text or exactly one placeholder:
//! `{provider}`, `{account}`, `{type}`. A placeholder always renders as ONE token: characters
//! other than `A-Z a-z 0-9 - _` (the dot of `DOCUMENT.DELIVERED`, a space, `*`, `>`, anything
//! non-ASCII) become `_`, and an empty value becomes `_`. So no account name or provider value
//! can add tokens, form a wildcard, or make the subject invalid. The mapping is for routing
//! only; the exact values travel in the message headers and body. Pure: no I/O.

use std::fmt;

/// One token of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Provider,
    Account,
    Type,
}

/// A validated subject template, e.g. `pollhook.{provider}.{account}.{type}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    tokens: Vec<Token>,
}

/// The default subject template.
pub const DEFAULT_TEMPLATE: &str = "pollhook.{provider}.{account}.{type}";

impl Template {
    /// Validates `text`; the error says what is wrong, for the config's message.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("the subject template is empty".into());
        }
        let mut tokens = Vec::new();
        for part in text.split('.') {
            let token = match part {
                "{provider}" => Token::Provider,
                "{account}" => Token::Account,
                "{type}" => Token::Type,
                "" => return Err(format!("{text:?} has an empty token (two dots in a row, or a dot at an end)")),
                "*" | ">" => return Err(format!("{text:?} contains the wildcard {part:?}: a publish subject must be concrete")),
                p if p.contains(['{', '}']) => {
                    return Err(format!(
                        "{p:?} in {text:?} is not a placeholder; placeholders are whole tokens: {{provider}}, {{account}}, {{type}}"
                    ))
                }
                p if p.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    return Err(format!("{text:?} contains white space or a control character"))
                }
                p => Token::Literal(p.to_string()),
            };
            tokens.push(token);
        }
        Ok(Template {
            text: text.to_string(),
            tokens,
        })
    }

    /// The subject of one event.
    pub fn render(&self, provider: &str, account: &str, event_type: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        for (i, t) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match t {
                Token::Literal(l) => out.push_str(l),
                Token::Provider => push_token(&mut out, provider),
                Token::Account => push_token(&mut out, account),
                Token::Type => push_token(&mut out, event_type),
            }
        }
        out
    }

    /// Every subject the template can produce, as a NATS filter: placeholders become `*`.
    pub fn pattern(&self) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.as_str(),
                _ => "*",
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends `value` as one subject token (see the module docs).
fn push_token(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    out.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// Whether the stream subject `filter` (which may hold `*` and `>`) matches every subject that
/// `pattern` (concrete tokens and `*`) stands for.
pub fn covers(filter: &str, pattern: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    for (i, ft) in f.iter().enumerate() {
        if *ft == ">" {
            return p.len() > i;
        }
        let Some(pt) = p.get(i) else { return false };
        if *ft != "*" && (*pt == "*" || ft != pt) {
            return false;
        }
    }
    f.len() == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_token_per_placeholder_whatever_the_value() {
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            t.render("caminvoice", "acme-kh", "DOCUMENT.STATUS_UPDATED"),
            "pollhook.caminvoice.acme-kh.DOCUMENT_STATUS_UPDATED"
        );
        // Hostile values: dots, wildcards, spaces, empty, non-ASCII, a NUL.
        for account in ["a.b", "*", ">", "a b", "", "ägypten", "x\0y", "a.>", "\t"] {
            let s = t.render("op", account, "T");
            let tokens: Vec<&str> = s.split('.').collect();
            assert_eq!(tokens.len(), 4, "{account:?} -> {s:?}");
            assert!(
                tokens.iter().all(|tok| !tok.is_empty()
                    && *tok != "*"
                    && *tok != ">"
                    && tok.chars().all(|c| c.is_ascii_graphic())),
                "{account:?} -> {s:?}"
            );
            assert!(covers(&t.pattern(), &s), "{s} outside {}", t.pattern());
        }
        assert_eq!(t.pattern(), "pollhook.*.*.*");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (text, words) in [
            ("", "empty"),
            ("a..b", "empty token"),
            ("a.", "empty token"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("a.{member}", "not a placeholder"),
            ("a.x{type}", "not a placeholder"),
            ("a b.{type}", "white space"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.contains(words), "{text:?}: {e}");
        }
    }

    #[test]
    fn covers_follows_nats_wildcards() {
        for (filter, pattern, want) in [
            ("pollhook.>", "pollhook.*.*.*", true),
            (">", "pollhook.*", true),
            ("pollhook.*.*.*", "pollhook.*.*.*", true),
            ("pollhook.caminvoice.*.*", "pollhook.*.*.*", false),
            ("pollhook.*.*", "pollhook.*.*.*", false),
            ("pollhook.*.*.*.*", "pollhook.*.*.*", false),
            ("other.>", "pollhook.*.*.*", false),
            ("pollhook.>", "pollhook", false),
            ("pollhook.x.>", "pollhook.x.*", true),
            ("events", "events", true),
            ("events", "events.x", false),
        ] {
            assert_eq!(covers(filter, pattern), want, "{filter} vs {pattern}");
        }
    }
}
