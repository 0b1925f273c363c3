//! Input rules, each failing with the field it is about.

use crate::error::{ApiError, Result};

/// What a stored or displayed text may not hold: C0/C1 controls (NUL, newlines, escape
/// sequences) and the bidirectional overrides and isolates that make text render other than
/// it reads (Unicode TR 9; "Trojan Source", CVE-2021-42574).
pub fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// 400 naming `field` when `s` holds a control character.
pub fn no_control(field: &'static str, s: &str) -> Result<()> {
    if s.chars().any(is_control) {
        return Err(ApiError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub fn username(s: &str) -> Result<String> {
    no_control("username", s)?;
    let s = s.trim();
    if !(3..=25).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::validation(
            "username",
            "3-25 characters of letters, digits and _",
        ));
    }
    Ok(s.to_lowercase())
}

pub fn email(s: &str) -> Result<String> {
    no_control("email", s)?;
    let s = s.trim();
    let ok = s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.contains(char::is_whitespace)
        });
    if !ok {
        return Err(ApiError::validation("email", "not a valid email address"));
    }
    Ok(s.to_lowercase())
}

pub fn password(s: &str) -> Result<()> {
    let n = s.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::validation("password", "8-128 characters"));
    }
    Ok(())
}

pub fn title(s: &str) -> Result<String> {
    no_control("title", s)?;
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 140 {
        return Err(ApiError::validation("title", "1-140 characters"));
    }
    Ok(s.to_owned())
}

pub fn tags(tags: &[String]) -> Result<Vec<String>> {
    if tags.len() > 10 {
        return Err(ApiError::validation("tags", "at most 10 tags"));
    }
    tags.iter()
        .map(|t| {
            let t = t.trim().to_lowercase();
            if t.is_empty()
                || t.chars().count() > 25
                || !t.chars().all(|c| c.is_alphanumeric() || c == '-')
            {
                Err(ApiError::validation(
                    "tags",
                    "tags are 1-25 letters, digits or -",
                ))
            } else {
                Ok(t)
            }
        })
        .collect()
}

pub fn language(s: &str) -> Result<String> {
    // ISO 639-1 code, optionally with a region: en, pt-br.
    let ok = matches!(s.len(), 2 | 5)
        && s.bytes().take(2).all(|b| b.is_ascii_lowercase())
        && (s.len() == 2
            || (s.as_bytes()[2] == b'-' && s.bytes().skip(3).all(|b| b.is_ascii_alphabetic())));
    if !ok {
        return Err(ApiError::validation(
            "language",
            "an ISO 639-1 code such as en or pt-br",
        ));
    }
    Ok(s.to_lowercase())
}

/// Category slugs: lowercase letters, digits and `-`.
pub fn slug(field: &'static str, s: &str) -> Result<()> {
    if (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            "a category slug (see GET /api/categories)",
        ))
    }
}

/// Record keys we hand out (see `db::new_id`); anything else cannot exist.
pub fn id(s: &str) -> Result<()> {
    if s.len() == 20
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(ApiError::NotFound("resource"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(username(" Alice_1 ").unwrap(), "alice_1");
        assert!(username("al").is_err());
        assert!(username("al ice").is_err());
        assert_eq!(email("A@Example.com").unwrap(), "a@example.com");
        for bad in ["a", "a@b", "@b.c", "a@.c", "a@b.", "a b@c.d", "a@b@c.d"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(title("").is_err());
        assert!(title(&"x".repeat(141)).is_err());
        assert!(language("en").is_ok());
        assert!(language("pt-br").is_ok());
        assert!(language("english").is_err());
        assert!(tags(&["Rust".into()]).is_ok());
        assert!(tags(&["has space".into()]).is_err());
        assert!(id("abcdefghij0123456789").is_ok());
        assert!(id("user:abc").is_err());
    }

    #[test]
    fn control_characters_are_refused_by_name() {
        let says = |r: Result<String>, field: &str| match r {
            Err(ApiError::Validation { field: f, message }) => {
                assert_eq!(f, field);
                assert_eq!(message, "must not contain control characters");
            }
            other => panic!("{field}: {:?}", other.map_err(|e| e.to_string())),
        };
        says(email("a\u{0}b@example.com"), "email");
        says(email("a@example.com\r\nBcc: x@y.z"), "email");
        says(title("Live\u{7}"), "title");
        says(title("tab\there"), "title");
        says(title("a \u{202E}gnp.exe"), "title");
        says(username("bob\u{1b}[31m"), "username");
        assert!(title("Ünïcödé is fine ✓").is_ok());
    }
}
