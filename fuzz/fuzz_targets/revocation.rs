//! The revocation list line format: any bytes parse into a list (malformed lines counted,
//! never fatal), however the stream is cut into chunks, and every entry is found again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::revocation::list::{ALL_TOKENS, ListParser, RevocationList};

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, text)) = data.split_first() else {
        return;
    };
    let whole = RevocationList::parse(text);

    // The same bytes fed in chunks (sizes from the first byte) parse the same.
    let mut parser = ListParser::default();
    let step = usize::from(cuts % 31) + 1;
    for chunk in text.chunks(step) {
        parser.feed(chunk);
    }
    let chunked = parser.finish();
    assert_eq!(
        whole.jtis.iter().collect::<Vec<_>>(),
        chunked.jtis.iter().collect::<Vec<_>>()
    );
    assert_eq!(
        whole.subs.iter().collect::<Vec<_>>(),
        chunked.subs.iter().collect::<Vec<_>>()
    );
    assert_eq!(whole.cutoffs, chunked.cutoffs);
    assert_eq!(whole.malformed, chunked.malformed);

    // Sorted, unique, found by lookup, and no entry longer than the limit.
    assert_eq!(whole.subs.len(), whole.cutoffs.len());
    for list in [&whole.jtis, &whole.subs] {
        let entries: Vec<&[u8]> = list.iter().collect();
        assert!(entries.windows(2).all(|w| w[0] < w[1]), "not sorted/unique");
        for entry in entries {
            assert!(!entry.is_empty());
            assert!(entry.len() <= tokengate::revocation::list::MAX_ENTRY_BYTES);
            let text = std::str::from_utf8(entry).expect("entries are UTF-8");
            assert!(list.contains(text));
        }
    }
    for (i, sub) in whole.subs.iter().enumerate() {
        let sub = std::str::from_utf8(sub).expect("entries are UTF-8");
        assert_eq!(whole.sub_cutoff(sub), Some(whole.cutoffs[i]));
        assert!(whole.cutoffs[i] <= ALL_TOKENS);
    }
    assert!(whole.problems.len() <= whole.malformed);
});
