//! Debian control-file syntax (deb822): paragraphs of `Field: value` with continuation lines.
//! Used for Packages indices, Release files, `.sources` files and a .deb's `control`.

/// One paragraph, fields in file order; values keep their continuation lines verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (field names are case-insensitive in deb822).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets `name`, replacing an existing value in place or appending.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// The paragraph as text, ending with a newline (no blank line).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.fields {
            out.push_str(k);
            out.push(':');
            if !v.starts_with('\n') && !v.is_empty() {
                out.push(' ');
            }
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

/// Parses deb822 text into paragraphs. Comment lines (`#`) are skipped; a line without a colon
/// outside a continuation is reported with its 1-based line number.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, (usize, String)> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            match cur.fields.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                None => return Err((i + 1, line.to_owned())),
            }
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) if !k.is_empty() && !k.contains(' ') => {
                cur.fields.push((k.to_owned(), v.trim().to_owned()));
            }
            _ => return Err((i + 1, line.to_owned())),
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_and_comments() -> Result<(), (usize, String)> {
        let text = "# c\nPackage: a\nDescription: short\n long\n .\n more\n\n\nPackage: b\n";
        let ps = parse(text)?;
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("Description"), Some("short\n long\n .\n more"));
        assert_eq!(ps[1].get("Package"), Some("b"));
        assert_eq!(
            ps[0].render(),
            "Package: a\nDescription: short\n long\n .\n more\n"
        );
        Ok(())
    }

    #[test]
    fn reports_bad_line() {
        assert_eq!(
            parse("Package: a\nnonsense\n"),
            Err((2, "nonsense".to_owned()))
        );
    }
}
