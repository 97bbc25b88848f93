//! Text → hashed features.
//!
//! Words are maximal runs of alphanumeric characters after Unicode lower-casing (so "Rust's" gives
//! "rust" and "s"; CJK and accented letters are alphanumeric too). Each word contributes:
//! - itself (kind [`WORD`]),
//! - its character n-grams for n in [`NGRAM_MIN`]..=[`NGRAM_MAX`] over `<word>` (kind [`CHAR`]), the
//!   angle brackets marking the word boundaries so prefixes and suffixes are features of their own;
//!   a word shorter than `n - 2` characters adds no n-gram of that size;
//! - with the next word, the bigram (kind [`BIGRAM`]).
//!
//! Char n-grams make misspellings and inflections ("route", "routing") close; words and bigrams
//! keep whole-token identity and a little order.

use crate::hash::hash_parts;

/// Namespace of word-unigram features.
pub const WORD: u8 = 1;
/// Namespace of word-bigram features.
pub const BIGRAM: u8 = 2;
/// Namespace of character n-gram features.
pub const CHAR: u8 = 3;
/// Smallest character n-gram.
pub const NGRAM_MIN: usize = 3;
/// Largest character n-gram.
pub const NGRAM_MAX: usize = 5;

/// Lower-cased words of `text`, each as a `String`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Appends the hashes of every feature of `text` to `out` (cleared first), one per occurrence.
pub fn feature_hashes(text: &str, seed: u64, out: &mut Vec<u64>) {
    out.clear();
    let words = words(text);
    let mut buf = [0u8; 4 * (NGRAM_MAX + 1)];
    let mut chars: Vec<char> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        out.push(hash_parts(seed, WORD, &[w.as_bytes()]));
        if let Some(next) = words.get(i + 1) {
            out.push(hash_parts(seed, BIGRAM, &[w.as_bytes(), next.as_bytes()]));
        }
        chars.clear();
        chars.push('<');
        chars.extend(w.chars());
        chars.push('>');
        for n in NGRAM_MIN..=NGRAM_MAX {
            for gram in chars.windows(n) {
                let mut len = 0;
                for c in gram {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                out.push(hash_parts(seed, CHAR, &[&buf[..len]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_and_lowercase_unicode() {
        assert_eq!(
            words("Hello, Wörld! 東京 x2"),
            vec!["hello", "wörld", "東京", "x2"]
        );
        assert!(words("  ,;!  ").is_empty());
    }

    #[test]
    fn feature_counts_match_the_definition() {
        let mut out = Vec::new();
        // One word "abc": 1 word + "<abc>" has 3 trigrams, 2 four-grams, 1 five-gram.
        feature_hashes("abc", 0, &mut out);
        assert_eq!(out.len(), 1 + 3 + 2 + 1);
        // Two words: + one bigram; "ab" gives "<ab>": 2 trigrams, 1 four-gram.
        feature_hashes("abc ab", 0, &mut out);
        assert_eq!(out.len(), 7 + 1 + (1 + 2 + 1));
    }
}
