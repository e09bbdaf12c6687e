//! Reading a file of the usual layout one table at a time, and a large one in parts on every
//! CPU: the same configuration, or the same errors at the same lines, as the whole file gives.

use super::*;

#[test]
fn a_file_of_the_usual_layout_is_read_one_table_at_a_time() {
    assert!(file::read_in_pieces(GOOD, Threads::Every).is_some());
    // Other layouts are read as a whole, with the same result.
    let later_defaults = GOOD.replace("[defaults]", "[[certificate]]\nname = \"a.example.com\"\n[defaults]");
    let sub_table = format!("{GOOD}[certificate.admin_contact]\nfname = \"A\"\n");
    for text in [&later_defaults, &sub_table] {
        assert!(file::read_in_pieces(text, Threads::Every).is_none(), "{text}");
        let _ = parse_text(text);
    }
    // A line that opens a table inside a multi-line string is not a cut: the piece before it
    // does not read, and the whole file is read instead.
    let in_string = GOOD.replace(
        "reload = [\"systemctl\", \"reload\", \"nginx\"]",
        "reload = [\"/bin/echo\", \"\"\"\n[[certificate]]\nname = \"not.example.com\"\n\"\"\"]",
    );
    assert!(file::read_in_pieces(&in_string, Threads::Every).is_none());
    let c = parse_text(&in_string).expect("the string is part of the reload command");
    assert_eq!(c.certificates.len(), 1);
    assert_eq!(
        c.certificates[0].reload[1],
        "[[certificate]]\nname = \"not.example.com\"\n"
    );
}

#[test]
fn a_mistake_in_a_later_table_read_by_itself_names_its_line() {
    let mut text = GOOD.to_string();
    for i in 0..50 {
        text += &format!("\n[[certificate]]\nname = \"c{i}.example.com\"\n");
        if i == 37 {
            text += "key = \"dsa\"\n";
        }
    }
    assert!(file::read_in_pieces(&text, Threads::Every).is_some());
    let line = text.lines().position(|l| l == "key = \"dsa\"").unwrap() + 1;
    check_error(&text, "certificate[38].key", line, "unknown key type");
}

#[test]
fn work_in_parts_comes_back_in_order_with_each_part_s_first_index() {
    let got = super::parts::in_parts_of(4, (0..10).collect::<Vec<u32>>(), |first, items| (first, items));
    assert_eq!(got, vec![(0, vec![0, 1, 2, 3]), (4, vec![4, 5, 6, 7]), (8, vec![8, 9])]);
    assert_eq!(
        super::parts::in_parts_of(4, vec![1, 2], |first, items| (first, items)),
        vec![(0, vec![1, 2])]
    );
    assert_eq!(
        super::parts::in_parts_of(4, Vec::<u8>::new(), |_, items| items.len()),
        vec![0]
    );
}

/// Enough certificates to be read and checked in parts on a machine of two CPUs or more: every
/// certificate comes back in the order of the file, and an error in either part, or a name
/// configured in one part and again in the other, names its certificate and line.
#[test]
fn ten_thousand_certificates_are_read_and_checked_in_parts_as_one() {
    let mut text = GOOD.to_string();
    for i in 0..10_000 {
        text += &format!("\n[[certificate]]\nname = \"c{i}.example.com\"\n");
    }
    let c = parse_text(&text).expect("10,001 good certificates");
    assert_eq!(c.certificates.len(), 10_001);
    assert_eq!(c.certificates[0].name, "www.example.com");
    for (i, cert) in c.certificates[1..].iter().enumerate() {
        assert_eq!(cert.name, format!("c{i}.example.com"));
    }

    let twice = text.replacen("name = \"c7000.example.com\"", "name = \"c100.example.com\"", 1);
    let bad = twice.replacen("name = \"c9998.example.com\"", "name = \"not a host\"", 1);
    let line_of = |line: &str| bad.lines().position(|l| l == line).unwrap() + 1;
    let errors = parse_text(&bad).expect_err("a name twice and a bad one").0;
    let found: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    let second = bad.match_indices("name = \"c100.example.com\"").nth(1).unwrap().0;
    let second_line = bad[..second].lines().count();
    assert_eq!(
        found,
        vec![
            ("certificate[7001].name", Some(second_line)),
            ("certificate[9999].name", Some(line_of("name = \"not a host\""))),
        ],
        "{errors:?}"
    );
    assert!(errors[0].message.contains("c100.example.com is configured twice"));
}
