//! Input rules, each failing with the field it is about.

use crate::error::{ApiError, Result};

pub fn username(s: &str) -> Result<String> {
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
}
