//! An error as a user reads it: its message and its sources' (`a: b: c`). A client
//! library's top-level message often says only what failed ("error sending request for
//! url …"); why ("Connection refused", an unknown certificate issuer) is in its sources.

/// `err` and its sources' messages, `a: b: c`, each said once (an SDK error often
/// repeats its source's text), without Debug dumps.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
