"""Contacts as a streamed text/csv body: any size, read as it arrives, chunk boundaries
anywhere (inside a quoted field, inside a UTF-8 character), on both backends."""

from collections.abc import AsyncIterator

from tests.campaigns.conftest import campaign, create_campaign
from tests.conftest import error_code

CSV = {"Content-Type": "text/csv"}


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def upload(client, tenant, campaign_id: str, data: bytes, size: int = 4096):
    return await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        content=chunks(data, size),
        headers={**tenant.headers, **CSV},
    )


async def all_contacts(client, tenant, campaign_id: str) -> list[dict]:
    found, cursor = [], None
    while True:
        params = {"limit": 1000, **({"after": cursor} if cursor else {})}
        page = (
            await client.get(
                f"/v1/campaigns/{campaign_id}/contacts", params=params, headers=tenant.headers
            )
        ).json()
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_a_20000_row_csv_is_streamed_in(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    rows = ["phone_number,name,plan"] + [f"1555{i:07d},Person {i},Gold" for i in range(20_000)]
    response = await upload(client, tenant, campaign_id, ("\n".join(rows) + "\n").encode(), 8191)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "status": "success",
        "inserted_count": 20_000,
        "duplicate_count": 0,
        "invalid_count": 0,
        "invalid": [],
    }
    contacts = await all_contacts(client, tenant, campaign_id)
    assert len(contacts) == 20_000
    assert contacts[0]["phone_number"] == "+15550000000"
    assert contacts[0]["variables"] == {"name": "Person 0", "plan": "Gold"}
    assert contacts[-1]["phone_number"] == "+15550019999"
    assert (await campaign(client, tenant, campaign_id))["contacts"]["total"] == 20_000


async def test_rows_quotes_zones_duplicates_and_invalid_lines(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = (
        "\ufeffname , phone_number,timezone,note\r\n"
        '"Zoë, the first",+15557770001,Europe/Paris,"said ""hi""\nthen left"\r\n'
        "Bob,15557770002,,\r\n"
        "\r\n"
        "Bad,12,,\r\n"
        "Cal,+15557770003,Moon/Base,\r\n"
        "Dup,+15557770001,,\r\n"
        "Short,+15557770004\r\n"
        "Eve,15557770005,America/New_York,last row without a newline"
    ).encode()
    response = await upload(client, tenant, campaign_id, data, size=7)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["inserted_count"] == 3
    assert result["duplicate_count"] == 1
    assert result["invalid_count"] == 3
    assert [(row["row"]) for row in result["invalid"]] == [5, 6, 8]
    reasons = [row["reason"] for row in result["invalid"]]
    assert "phone_number '12'" in reasons[0]
    assert "Moon/Base" in reasons[1]
    assert "expected 4 columns, found 2" in reasons[2]
    contacts = {c["phone_number"]: c for c in await all_contacts(client, tenant, campaign_id)}
    assert set(contacts) == {"+15557770001", "+15557770002", "+15557770005"}
    first = contacts["+15557770001"]
    assert first["variables"] == {"name": "Zoë, the first", "note": 'said "hi"\nthen left'}
    assert first["timezone"] == "Europe/Paris"
    assert contacts["+15557770002"]["timezone"] is None
    assert contacts["+15557770005"]["timezone"] == "America/New_York"

    # The same file again: every number is a duplicate now.
    again = await upload(client, tenant, campaign_id, data, size=4096)
    assert (again.json()["inserted_count"], again.json()["duplicate_count"]) == (0, 4)


async def test_invalid_rows_listed_are_capped(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = "phone_number\n" + "\n".join(["nope"] * 250 + ["+15557770001"])
    result = (await upload(client, tenant, campaign_id, data.encode())).json()
    assert result["inserted_count"] == 1
    assert result["invalid_count"] == 250
    assert len(result["invalid"]) == 100
    assert result["invalid"][0]["row"] == 2


async def test_a_bad_header_or_body_refuses_the_upload(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    cases = [
        (b"number,name\n+15557770001,A\n", "invalid_csv_header"),
        (b"phone_number,phone_number\n+15557770001,+15557770002\n", "invalid_csv_header"),
        (b"", "invalid_csv"),
        (b"phone_number\n\xff\xfe\n", "invalid_csv"),
        (b'phone_number,note\n+15557770001,"never closed\n' + b"x" * 1_100_000, "invalid_csv"),
    ]
    for data, code in cases:
        response = await upload(client, tenant, campaign_id, data)
        assert response.status_code == 400, response.text
        assert error_code(response) == code
    assert await all_contacts(client, tenant, campaign_id) == []


async def test_an_idempotency_key_replays_a_csv_upload(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = b"phone_number,name\n+15557770001,A\n+15557770002,B\n"
    headers = {**tenant.headers, **CSV, "Idempotency-Key": "upload-1"}
    path = f"/v1/campaigns/{campaign_id}/contacts"
    first = await client.post(path, content=chunks(data, 5), headers=headers)
    again = await client.post(path, content=chunks(data, 11), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["inserted_count"] == 2
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = await client.post(path, content=data + b"+15557770003,C\n", headers=headers)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert len(await all_contacts(client, tenant, campaign_id)) == 2


async def test_an_overlong_idempotency_key_refuses_a_csv_upload_whole(
    client, tenant, agent
) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    headers = {**tenant.headers, **CSV, "Idempotency-Key": "u" * 256}
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        content=chunks(b"phone_number\n+15557770001\n", 7),
        headers=headers,
    )
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert await all_contacts(client, tenant, campaign_id) == []
