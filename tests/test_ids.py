from outdial.ids import new_id, new_ids


def test_ids_sort_in_creation_order_even_within_a_millisecond() -> None:
    ids = [new_id("call") for _ in range(2000)] + new_ids("call", 2000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_carry_their_prefix() -> None:
    assert new_id("job").startswith("job_")
    assert all(i.startswith("leg_") for i in new_ids("leg", 3))


def test_uuids_are_version_7_and_sort_in_creation_order() -> None:
    import uuid

    from outdial.ids import new_uuid

    values = [new_uuid() for _ in range(3000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    parsed = uuid.UUID(values[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
