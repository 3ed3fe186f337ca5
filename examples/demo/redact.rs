//! Connection strings with their passwords masked, for everything the demo
//! prints: its header, its errors.

/// The mask printed in place of a password.
const MASK: &str = "****";

/// `s` with any password replaced by `****`: the password of a URL's user
/// info (`redis://:secret@host`, `postgres://app:secret@host/db`), a
/// `password=` or `pass=` query parameter, or the `password` of a libpq
/// `key=value` string (quoted or not). Everything else is kept as given.
pub fn redact(s: &str) -> String {
    match s.find("://") {
        Some(i) => redact_url(s, i + 3),
        None => redact_key_values(s),
    }
}

/// A URL whose authority starts at byte `start`.
fn redact_url(s: &str, start: usize) -> String {
    let rest = &s[start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    let mut out = String::from(&s[..start]);
    // The user info ends at the authority's last '@' (an unescaped '@' in
    // a password then stays inside the masked part).
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let after = &tail[q + 1..];
            let (query, fragment) = after.split_at(after.find('#').unwrap_or(after.len()));
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if is_password_key(key) => format!("{key}={MASK}"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
            out.push_str(fragment);
        }
        None => out.push_str(tail),
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass")
}

/// A libpq `key=value` string: spaces around `=` allowed, a value quoted
/// with `'` (with `\` escapes) or unquoted up to the next space.
fn redact_key_values(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        // Copy the spaces before the key, the key, and the '=' with any
        // spaces around it.
        let gap = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push_str(&s[gap..i]);
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[key_start..i];
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'=') {
            i += 1;
        }
        out.push_str(&s[key_start..i]);
        // The value.
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(bytes.len());
        }
        if key == "password" {
            out.push_str(MASK);
        } else {
            out.push_str(&s[value_start..i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_passwords_only() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://:hunter2@cache:6379/0"),
            "redis://:****@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://app:hunter2@cache"),
            "rediss://app:****@cache"
        );
        assert_eq!(
            redact("postgres://app:p@ss@db:5432/orders?sslmode=require"),
            "postgres://app:****@db:5432/orders?sslmode=require"
        );
        assert_eq!(
            redact("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(
            redact("postgres://db/orders?user=app&password=hunter2#x"),
            "postgres://db/orders?user=app&password=****#x"
        );
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
            "redis+unix:///run/redis.sock?db=1&pass=****"
        );
    }

    #[test]
    fn key_value_strings_lose_their_passwords_only() {
        assert_eq!(
            redact("host=127.0.0.1 user=postgres dbname=test"),
            "host=127.0.0.1 user=postgres dbname=test"
        );
        assert_eq!(
            redact("host=db password=hunter2 user=app"),
            "host=db password=**** user=app"
        );
        assert_eq!(
            redact("host=db password = 'hun ter\\'2' user=app"),
            "host=db password = **** user=app"
        );
        assert_eq!(redact("password=hunter2"), "password=****");
        assert_eq!(redact("  password=hunter2 "), "  password=**** ");
        assert_eq!(redact("password='unterminated"), "password=****");
    }
}
