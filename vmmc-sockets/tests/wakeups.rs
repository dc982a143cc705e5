//! A side asleep waiting for data is woken by data, not by the credit its peer gives back
//! for what it consumed (on shm, where the sleeper's word is seen in time). The only test of
//! its binary: it counts the process's notifications.

use std::io::{Read, Write};
use std::time::Duration;

use test_support::Backend;
use vmmc_sockets::{Counters, StreamOptions, VmmcListener, VmmcStream};

#[test]
fn a_reader_asleep_is_woken_by_data_not_by_credit() {
    let opts = StreamOptions {
        spin: Duration::from_micros(10),
        ..StreamOptions::default()
    };
    let l = VmmcListener::bind_with(&Backend::Shm.fresh_addr(), opts.clone()).unwrap();
    let addr = l.local_addr().to_string();
    let t = std::thread::spawn(move || l.accept().unwrap().0);
    let c = VmmcStream::connect_with(&addr, &opts).unwrap();
    let s = t.join().unwrap();
    (&c).write_all(&[7u8; 100]).unwrap();
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            let mut b = [0u8; 1];
            (&c).read_exact(&mut b).unwrap();
            b[0]
        });
        // Long enough for the reader to have spun and gone to sleep.
        std::thread::sleep(Duration::from_millis(100));
        let before = Counters::now();
        let mut got = [0u8; 100];
        (&s).read_exact(&mut got).unwrap();
        let credit_only = Counters::now() - before;
        // (Asserted once the reader has its byte, so that a failure does not leave it waiting.)
        (&s).write_all(&[42]).unwrap();
        assert_eq!(reader.join().unwrap(), 42);
        let all = Counters::now() - before;
        assert_eq!(credit_only.words_stored, 1, "{credit_only:?}");
        assert_eq!(credit_only.notifications, 0, "{credit_only:?}");
        assert_eq!(all.notifications, 1, "{all:?}");
    });
}
