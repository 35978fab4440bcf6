//! A fast first pass over the failregexes: each is loosened into a pattern
//! for the `regex` crate (look-arounds dropped, conditionals turned into
//! alternatives, back references into wildcards) that matches at least
//! everything the exact pattern matches. A loosened pattern anchored at the
//! start with a few literal beginnings (`^Failed `, `^Invalid user `) is
//! checked by comparing those; the others go through one pass of a combined
//! DFA. Only the failregexes that pass run in PCRE2.

use regex::{RegexSet, RegexSetBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::Look;

#[derive(Debug)]
pub struct Prefilter {
    set: Option<RegexSet>,
    /// Set entry → failregex index.
    entries: Vec<usize>,
    /// Failregexes anchored at the start.
    prefixes: Vec<Beginnings>,
    /// Failregexes that could not be loosened: always run.
    always: Vec<usize>,
    count: usize,
}

/// How the matches of one anchored failregex begin.
#[derive(Debug)]
struct Beginnings {
    /// The failregex.
    index: usize,
    /// Which first bytes can begin a match.
    first: Box<[bool; 256]>,
    /// The literals one of which every match begins with.
    literals: Vec<Vec<u8>>,
}

/// Most literal beginnings worth comparing one by one.
const MAX_PREFIXES: usize = 64;

/// The literals every match of `loose` (anchored at the text's start)
/// begins with, if there are few enough.
fn start_literals(loose: &str, multiline: bool) -> Option<Vec<Vec<u8>>> {
    if multiline {
        return None;
    }
    let hir = regex_syntax::parse(loose).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_PREFIXES || lits.iter().any(|l| l.as_bytes().is_empty())
    {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

impl Prefilter {
    /// `patterns` are the failregexes as compiled for PCRE2.
    pub fn new(patterns: &[String], multiline: bool) -> Self {
        let mut loose = Vec::new();
        let mut entries = Vec::new();
        let mut prefixes = Vec::new();
        let mut always = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            match loosen(p, multiline) {
                Some(l) if regex::Regex::new(&l).is_ok() => match start_literals(&l, multiline) {
                    Some(lits) => {
                        let mut first = Box::new([false; 256]);
                        for l in &lits {
                            if let Some(b) = l.first() {
                                first[usize::from(*b)] = true;
                            }
                        }
                        prefixes.push(Beginnings {
                            index: i,
                            first,
                            literals: lits,
                        });
                    }
                    None => {
                        loose.push(l);
                        entries.push(i);
                    }
                },
                _ => always.push(i),
            }
        }
        let set = if loose.is_empty() {
            None
        } else {
            match RegexSetBuilder::new(&loose)
                .multi_line(multiline)
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
            {
                Ok(s) => Some(s),
                Err(_) => {
                    always.append(&mut entries);
                    always.sort_unstable();
                    None
                }
            }
        };
        Prefilter {
            set,
            entries,
            prefixes,
            always,
            count: patterns.len(),
        }
    }

    /// Which failregexes may match `text`.
    pub fn candidates(&self, text: &str, out: &mut Vec<bool>) {
        out.clear();
        out.resize(self.count, false);
        for &i in &self.always {
            out[i] = true;
        }
        let bytes = text.as_bytes();
        let first = bytes.first().map_or(0, |b| usize::from(*b));
        for b in &self.prefixes {
            out[b.index] = b.first[first] && b.literals.iter().any(|l| bytes.starts_with(l));
        }
        if let Some(set) = &self.set {
            for m in set.matches(text).iter() {
                if let Some(&i) = self.entries.get(m) {
                    out[i] = true;
                }
            }
        }
    }

    /// How many failregexes the first pass covers.
    pub fn covered(&self) -> usize {
        self.entries.len() + self.prefixes.len()
    }
}

/// A pattern for the `regex` crate that matches at least what the PCRE2
/// pattern `p` matches, or `None` if `p` uses something that cannot be
/// loosened safely.
pub fn loosen(p: &str, multiline: bool) -> Option<String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    // Open groups: whether each is being dropped (a look-around).
    let mut stack: Vec<bool> = Vec::new();
    let mut dropping = 0usize;
    let emit = |out: &mut String, dropping: usize, s: &str| {
        if dropping == 0 {
            out.push_str(s);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let n = *chars.get(i + 1)?;
                let s: String = match n {
                    '1'..='9' => "(?s:.*?)".into(),
                    '0' | 'Q' | 'E' | 'K' | 'R' | 'h' | 'H' | 'v' | 'V' | 'X' | 'C' | 'G' | 'g'
                    | 'k' | 'N' | 'o' | 'c' => return None,
                    'Z' => r"(?:\n?\z)".into(),
                    'z' | 'A' | 'b' | 'B' | 'd' | 'D' | 'w' | 'W' | 's' | 'S' | 'n' | 't' | 'r'
                    | 'f' | 'a' | 'e' | 'p' | 'P' | 'x' => {
                        // `\p{..}`, `\x{..}` and `\xHH` carry their argument.
                        let mut s = format!("\\{n}");
                        if matches!(n, 'p' | 'P' | 'x') && chars.get(i + 2) == Some(&'{') {
                            let mut j = i + 2;
                            while j < chars.len() && chars[j] != '}' {
                                s.push(chars[j]);
                                j += 1;
                            }
                            s.push('}');
                            i = j - 1;
                        }
                        s
                    }
                    n if n.is_ascii_alphanumeric() => return None,
                    n => regex::escape(&n.to_string()),
                };
                emit(&mut out, dropping, &s);
                i += 2;
            }
            '[' => {
                let (class, next) = class(&chars, i)?;
                emit(&mut out, dropping, &class);
                i = next;
            }
            '(' => {
                let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
                if rest.starts_with("(*") {
                    return None;
                }
                if rest.starts_with("(?=")
                    || rest.starts_with("(?!")
                    || rest.starts_with("(?<=")
                    || rest.starts_with("(?<!")
                {
                    stack.push(true);
                    dropping += 1;
                    i += if rest.starts_with("(?<") { 4 } else { 3 };
                } else if rest.starts_with("(?P=") {
                    let close = chars[i..].iter().position(|c| *c == ')')?;
                    emit(&mut out, dropping, "(?s:.*?)");
                    i += close + 1;
                } else if rest.starts_with("(?(") {
                    // `(?(name)yes|no)` → `(?:yes|no)`.
                    if chars.get(i + 3) == Some(&'?') {
                        return None;
                    }
                    let close = chars[i + 3..].iter().position(|c| *c == ')')?;
                    stack.push(false);
                    emit(&mut out, dropping, "(?:");
                    i += 3 + close + 1;
                } else if rest.starts_with("(?P<")
                    || (rest.starts_with("(?<")
                        && !rest.starts_with("(?<=")
                        && !rest.starts_with("(?<!"))
                {
                    let close = chars[i..].iter().position(|c| *c == '>')?;
                    stack.push(false);
                    emit(&mut out, dropping, "(?:");
                    i += close + 1;
                } else if rest.starts_with("(?>") || rest.starts_with("(?|") {
                    stack.push(false);
                    emit(&mut out, dropping, "(?:");
                    i += 3;
                } else if rest.starts_with("(?") {
                    // Flags: `(?i)`, `(?i:`, `(?:`.
                    let mut j = i + 2;
                    while j < chars.len() && chars[j].is_ascii_alphabetic()
                        || chars.get(j) == Some(&'-')
                    {
                        if !"imsx-".contains(chars[j]) {
                            return None;
                        }
                        j += 1;
                    }
                    match chars.get(j) {
                        Some(':') => {
                            stack.push(false);
                            let s: String = chars[i..=j].iter().collect();
                            emit(&mut out, dropping, &s);
                        }
                        Some(')') => {
                            let s: String = chars[i..=j].iter().collect();
                            emit(&mut out, dropping, &s);
                        }
                        _ => return None,
                    }
                    i = j + 1;
                } else {
                    stack.push(false);
                    emit(&mut out, dropping, "(?:");
                    i += 1;
                }
            }
            ')' => {
                let dropped = stack.pop()?;
                if dropped {
                    dropping -= 1;
                } else {
                    emit(&mut out, dropping, ")");
                }
                i += 1;
            }
            '$' if !multiline => {
                emit(&mut out, dropping, r"(?:\n?\z)");
                i += 1;
            }
            '*' | '+' | '?' | '}' => {
                // A possessive quantifier (`*+`) matches no more than the
                // greedy one.
                emit(&mut out, dropping, &c.to_string());
                i += 1;
                if chars.get(i) == Some(&'+') {
                    i += 1;
                }
            }
            _ => {
                emit(&mut out, dropping, &c.to_string());
                i += 1;
            }
        }
    }
    stack.is_empty().then_some(out)
}

/// Copies a character class, escaping what the `regex` crate would read as
/// nested classes or set operations.
fn class(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut out = String::from("[");
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        out.push_str("\\]");
        i += 1;
    }
    while i < chars.len() {
        let c = chars[i];
        match c {
            ']' => {
                out.push(']');
                return Some((out, i + 1));
            }
            '\\' => {
                let n = *chars.get(i + 1)?;
                if matches!(n, 'Q' | 'E' | 'h' | 'v' | 'R' | 'N') || n.is_ascii_digit() {
                    return None;
                }
                out.push('\\');
                out.push(n);
                i += 2;
            }
            '[' => {
                if chars.get(i + 1) == Some(&':') {
                    // POSIX class `[:alpha:]`.
                    let close = chars[i..].windows(2).position(|w| w == [':', ']'])?;
                    out.extend(&chars[i..i + close + 2]);
                    i += close + 2;
                } else {
                    out.push_str("\\[");
                    i += 1;
                }
            }
            '&' | '-' | '~' if chars.get(i + 1) == Some(&c) => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(pcre: &str, text: &str) -> (bool, bool) {
        let exact = crate::fail2ban::regex::compile(pcre, false)
            .unwrap()
            .is_match(text.as_bytes())
            .unwrap();
        let loose = regex::Regex::new(&loosen(pcre, false).unwrap())
            .unwrap()
            .is_match(text);
        (exact, loose)
    }

    #[test]
    fn loosened_patterns_match_a_superset() {
        let cases = [
            (
                r"^Failed (?!publickey)\S+ for (?P<user>\S+) from (?P<ip>\d+\.\d+)$",
                "Failed password for x from 1.2\n",
            ),
            (r"^(?P<a>x)?(?(a)y|z)$", "xz\n"),
            (r"^(?P<s>[-/])a(?P=s)b$", "-a/b\n"),
            (r"^[[\]]x[a&&b]\Z", "[x&\n"),
            (r"(?<=^\[)\d+", "[12"),
            (r"(?i)^FAIL(?:ed)? <x>\s*$", "failed <x>   \n"),
        ];
        for (p, t) in cases {
            let (exact, loose) = both(p, t);
            assert!(
                loose || !exact,
                "{p} on {t:?}: exact {exact}, loose {loose}"
            );
            assert!(loose, "{p} should loosely match {t:?}");
        }
        assert!(!both(r"^abc$", "abd\n").1);
    }

    #[test]
    fn unsupported_constructs_are_left_to_pcre() {
        assert_eq!(loosen(r"a\Kb", false), None);
        assert_eq!(loosen(r"(*UTF)a", false), None);
        assert_eq!(loosen(r"(?(?=a)b|c)", false), None);
        let p = Prefilter::new(&[r"a\Kb".into(), "^x$".into(), "y+z".into()], false);
        let mut c = Vec::new();
        p.candidates("y\n", &mut c);
        assert_eq!(c, vec![true, false, false]);
        p.candidates("x\n", &mut c);
        assert_eq!(c, vec![true, true, false]);
        p.candidates("yyz\n", &mut c);
        assert_eq!(c, vec![true, false, true]);
        assert_eq!(p.covered(), 2);
        assert_eq!(p.prefixes.len(), 1);
    }
}
