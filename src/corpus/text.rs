//! Raw text → sentences of words with character offsets.
//!
//! Sentences and words follow Unicode UAX-29 (`unicode-segmentation`), which handles any script,
//! emoji sequences and combining marks, plus a few cheap fixes where UAX-29 is known to split
//! English badly: after titles ("Dr.") and initials ("J."), and at line wraps inside a sentence.
//! Sentences are capped at [`MAX_SENTENCE_WORDS`] because candidate spans live inside one
//! sentence and the span count grows with sentence length. Everything runs in linear time.

use unicode_segmentation::UnicodeSegmentation;

use super::{Document, Word};

/// Longest sentence kept whole; longer ones are cut into near-equal parts.
pub const MAX_SENTENCE_WORDS: usize = 200;

/// Words after which a UAX-29 sentence break is almost always wrong ("Mr. Smith").
const TITLES: &[&str] = &[
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "Ft", "Gen", "Col", "Lt", "Maj",
    "Sgt", "Capt", "Cmdr", "Adm", "Gov", "Sen", "Rep", "Rev", "Hon", "Pres", "Fr", "Messrs", "vs",
    "No", "Nos", "Vol", "pp", "Fig", "approx", "ca", "cf",
];

/// Month abbreviations: a break after them is wrong when a number follows ("Jan. 5").
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
];

/// Segments `text` into sentences of words. Word offsets are Unicode scalar indices into `text`,
/// which the document keeps. Empty or whitespace-only text gives a document without sentences.
pub fn segment(id: &str, text: &str) -> Document {
    let mut counter = CharCounter::new(text);
    let mut sentences = Vec::new();
    let mut current: Vec<Word> = Vec::new();
    let mut bounds = text.split_sentence_bound_indices().peekable();
    while let Some((start, sentence)) = bounds.next() {
        for (offset, word) in sentence.split_word_bound_indices() {
            if word.chars().all(is_invisible) {
                continue;
            }
            let begin = start + offset;
            let chars = counter.range(begin, begin + word.len());
            current.push(Word {
                text: word.to_string(),
                chars: Some(chars),
            });
        }
        let next = bounds.peek().map(|&(_, s)| s);
        if !next.is_some_and(|next| continues(sentence, &current, next)) {
            flush(&mut current, &mut sentences);
        }
    }
    flush(&mut current, &mut sentences);
    Document {
        id: id.to_string(),
        text: Some(text.to_string()),
        sentences,
        gold: None,
    }
}

/// Characters that make no visible word on their own: whitespace, controls and the zero-width
/// format characters (a word of only these would tokenize to nothing).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
        )
}

/// Whether the UAX-29 sentence that produced the tail of `words` should run on into `next`.
fn continues(sentence: &str, words: &[Word], next: &str) -> bool {
    let Some(first) = next.trim_start().chars().next() else {
        return false;
    };
    let [.., before, last] = words else {
        return false;
    };
    // An abbreviation is "Dr" directly followed by "." (UAX-29 makes them two words).
    let adjacent = matches!((before.chars, last.chars), (Some(b), Some(l)) if b.1 == l.0);
    if last.text == "." && adjacent {
        let w = before.text.as_str();
        let initial = {
            let mut cs = w.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if c.is_uppercase())
        };
        if initial || TITLES.contains(&w) {
            return true;
        }
        if MONTHS.contains(&w) && first.is_ascii_digit() {
            return true;
        }
    }
    // A single line break in the middle of a sentence is a wrap, not a paragraph end: UAX-29
    // breaks at every line break, which would cut hard-wrapped text into fragments.
    let wrapped = sentence
        .trim_end_matches([' ', '\t'])
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .is_some_and(|s| !s.ends_with('\n'));
    let terminal = last
        .text
        .ends_with(['.', '!', '?', ':', ';', '…', '。', '！', '？']);
    wrapped && !terminal && (first.is_lowercase() || first.is_ascii_digit())
}

/// Moves the pending words into `sentences`, cutting an over-long sentence into near-equal
/// parts (even parts avoid a tiny trailing fragment).
fn flush(current: &mut Vec<Word>, sentences: &mut Vec<Vec<Word>>) {
    if current.is_empty() {
        return;
    }
    let parts = current.len().div_ceil(MAX_SENTENCE_WORDS);
    let size = current.len().div_ceil(parts);
    let mut words = current.drain(..);
    for _ in 0..parts {
        sentences.push(words.by_ref().take(size).collect());
    }
}

/// Converts byte offsets, visited in increasing order, into char offsets in linear total time.
struct CharCounter<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharCounter<'a> {
    fn new(text: &'a str) -> Self {
        CharCounter {
            text,
            byte: 0,
            chars: 0,
        }
    }

    fn at(&mut self, byte: usize) -> usize {
        self.chars += self.text[self.byte..byte].chars().count();
        self.byte = byte;
        self.chars
    }

    fn range(&mut self, start: usize, end: usize) -> (usize, usize) {
        (self.at(start), self.at(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(doc: &Document) -> Vec<Vec<&str>> {
        doc.sentences
            .iter()
            .map(|s| s.iter().map(|w| w.text.as_str()).collect())
            .collect()
    }

    /// Every word is exactly the text at its char offsets, offsets increase and stay in bounds.
    fn check_offsets(doc: &Document) {
        let text = doc.text.as_deref().unwrap();
        let chars: Vec<char> = text.chars().collect();
        let mut prev_end = 0;
        for w in doc.words() {
            let (s, e) = w.chars.unwrap();
            assert!(prev_end <= s && s < e && e <= chars.len(), "{w:?}");
            assert_eq!(chars[s..e].iter().collect::<String>(), w.text);
            prev_end = e;
        }
    }

    #[test]
    fn splits_sentences_and_punctuation() {
        let doc = segment(
            "d",
            "Alice met Bob in Paris. They talked, briefly!  Then left?",
        );
        assert_eq!(
            words(&doc),
            vec![
                vec!["Alice", "met", "Bob", "in", "Paris", "."],
                vec!["They", "talked", ",", "briefly", "!"],
                vec!["Then", "left", "?"],
            ]
        );
        assert_eq!(doc.id, "d");
        assert_eq!(doc.sentences[1][0].chars, Some((24, 28)));
        check_offsets(&doc);
    }

    #[test]
    fn keeps_titles_initials_and_dates_together() {
        let doc = segment(
            "d",
            "Dr. Grey and J. R. Smith came on Jan. 5 to see Mr. Brown. He was out.",
        );
        assert_eq!(doc.sentences.len(), 2, "{:?}", words(&doc));
        assert_eq!(words(&doc)[1], vec!["He", "was", "out", "."]);
        // A month abbreviation before a capitalised word still ends the sentence.
        assert_eq!(segment("d", "It ended in Dec. The end.").sentences.len(), 2);
    }

    #[test]
    fn line_wraps_join_but_paragraphs_split() {
        let doc = segment(
            "d",
            "The river runs\nthrough the town.\n\nHeading\nThe next part.",
        );
        assert_eq!(
            words(&doc),
            vec![
                vec!["The", "river", "runs", "through", "the", "town", "."],
                vec!["Heading"],
                vec!["The", "next", "part", "."],
            ]
        );
        check_offsets(&doc);
        let crlf = segment("d", "one line\r\ncontinues here.");
        assert_eq!(crlf.sentences.len(), 1);
        check_offsets(&crlf);
    }

    #[test]
    fn empty_and_blank_text_have_no_sentences() {
        for text in ["", "   \n\t ", "\u{200B}\u{FEFF} \u{0007}"] {
            let doc = segment("e", text);
            assert!(doc.sentences.is_empty(), "{text:?}");
            assert_eq!(doc.text.as_deref(), Some(text));
        }
    }

    #[test]
    fn unicode_words_and_offsets() {
        // CJK (one word per ideograph under UAX-29), emoji ZWJ sequences, combining marks.
        let text = "東京に行った。Cafe\u{301} 👩\u{200D}🔬 rocks 🇫🇷! naïve";
        let doc = segment("u", text);
        check_offsets(&doc);
        let all: Vec<&str> = doc.words().map(|w| w.text.as_str()).collect();
        assert!(all.contains(&"Cafe\u{301}"), "{all:?}");
        assert!(all.contains(&"👩\u{200D}🔬"), "{all:?}");
        assert!(all.contains(&"🇫🇷"), "{all:?}");
        assert!(all.contains(&"naïve"), "{all:?}");
        assert!(all.contains(&"東"), "{all:?}");
        assert_eq!(doc.sentences.len(), 3, "{:?}", words(&doc));
    }

    #[test]
    fn long_sentences_are_cut_evenly() {
        let text = "word ".repeat(450);
        let doc = segment("l", &text);
        let lens: Vec<usize> = doc.sentences.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![150, 150, 150]);
        check_offsets(&doc);
    }

    #[test]
    fn huge_text_is_linear() {
        // 1M words without any sentence end: must finish quickly (quadratic would not).
        let text = "ab ".repeat(1_000_000);
        let start = std::time::Instant::now();
        let doc = segment("h", &text);
        assert_eq!(doc.word_count(), 1_000_000);
        assert!(doc.sentences.iter().all(|s| s.len() <= MAX_SENTENCE_WORDS));
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }

    proptest! {
        #[test]
        fn offsets_match_the_text(text in "\\PC{0,80}|[a-zA-Z .,!?\n\u{301}\u{200B}😀東]{0,120}") {
            let doc = segment("p", &text);
            check_offsets(&doc);
            for s in &doc.sentences {
                prop_assert!(!s.is_empty() && s.len() <= MAX_SENTENCE_WORDS);
            }
            for w in doc.words() {
                prop_assert!(!w.text.chars().all(is_invisible));
            }
        }
    }
}
