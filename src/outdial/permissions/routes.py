from fastapi import APIRouter

from outdial.error_handlers import error_responses
from outdial.keys.auth import SecretKey, Session
from outdial.permissions import service
from outdial.permissions.schemas import DialingPermissionsOut, DialingPermissionsUpdate

router = APIRouter(
    prefix="/dialing-permissions", tags=["dialing permissions"], responses=error_responses(403)
)


def permissions_out(permissions: service.DialingPermissions) -> DialingPermissionsOut:
    return DialingPermissionsOut(
        countries=list(permissions.countries),
        caller_id_countries=permissions.caller_id_countries,
        allow_premium_rate=permissions.allow_premium_rate,
        allow_high_risk=permissions.allow_high_risk,
        effective_countries=sorted(permissions.effective.countries),
    )


@router.get("", response_model=DialingPermissionsOut)
async def get_dialing_permissions(session: Session, principal: SecretKey) -> DialingPermissionsOut:
    """Where the tenant may call: countries, premium-rate numbers, high-risk ranges."""
    return permissions_out(
        await service.dialing_permissions(session, tenant_id=principal.tenant_id)
    )


@router.put("", response_model=DialingPermissionsOut, responses=error_responses(400))
async def put_dialing_permissions(
    body: DialingPermissionsUpdate, session: Session, principal: SecretKey
) -> DialingPermissionsOut:
    """Replace the tenant's dialing permissions (omitted fields take their defaults)."""
    return permissions_out(
        await service.set_dialing_permissions(session, tenant_id=principal.tenant_id, data=body)
    )
