from outdial.ids import new_id, new_ids


def test_ids_sort_in_creation_order_even_within_a_millisecond() -> None:
    ids = [new_id("call") for _ in range(2000)] + new_ids("call", 2000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_carry_their_prefix() -> None:
    assert new_id("job").startswith("job_")
    assert all(i.startswith("leg_") for i in new_ids("leg", 3))
