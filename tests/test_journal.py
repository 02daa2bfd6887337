"""The resume journal: finished groups survive, a torn tail is dropped, a journal made for
other input is not trusted."""

from llmzip.journal import Journal, JournalEntry

KEY = {"input_xxh64": 1, "settings": {"c": 16}}
GROUP_0 = [JournalEntry(0, b"\x00\x3c" * 4, 3, 0.5), JournalEntry(1, None, 5, 0.1)]
GROUP_1 = [JournalEntry(2, b"\x00\xc0" * 4, 2, 0.75)]


def write_two_groups(path):
    journal = Journal(path, KEY)
    journal.append(0, GROUP_0)
    journal.append(1, GROUP_1)
    journal.close()


def test_finished_groups_are_read_back(tmp_path):
    path = tmp_path / "out.lmz.journal"
    write_two_groups(path)
    again = Journal(path, KEY)
    assert again.groups == {0: GROUP_0, 1: GROUP_1}
    again.close()


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path):
    path = tmp_path / "out.lmz.journal"
    write_two_groups(path)
    path.write_bytes(path.read_bytes()[:-3])  # power lost in the middle of the last append
    again = Journal(path, KEY)
    assert again.groups == {0: GROUP_0}
    again.append(1, GROUP_1)  # appends after the tail was cut, not after the garbage
    again.close()
    assert Journal(path, KEY).groups == {0: GROUP_0, 1: GROUP_1}


def test_a_journal_for_another_key_starts_over(tmp_path):
    path = tmp_path / "out.lmz.journal"
    write_two_groups(path)
    other = Journal(path, {**KEY, "input_xxh64": 2})
    assert other.groups == {}
    other.close()
    assert Journal(path, {**KEY, "input_xxh64": 2}).groups == {}


def test_garbage_is_not_trusted(tmp_path):
    path = tmp_path / "out.lmz.journal"
    path.write_bytes(b"\xc1 not msgpack at all")
    journal = Journal(path, KEY)
    assert journal.groups == {}
    journal.close()
