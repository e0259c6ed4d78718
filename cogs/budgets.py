"""/budget and /usage: admins cap what people and the server may spend; everyone sees their use."""

from __future__ import annotations

import asyncio
import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.budgets import SPOKEN, Budgets, CapUse, RuleUse, UsageView
from bot.db.config_store import BudgetRule
from bot.db.models import BudgetScope, Period
from bot.db.usage_store import Spent
from bot.errors import UserError
from bot.usage_report import chart_png, fitted, records_csv
from cogs.permissions import admin_group, require_admin
from cogs.places import is_admin
from cogs.sinks import NO_MENTIONS

ADMINS_ONLY = "/budget is for people with the Manage Server permission."
SERVER_VIEW_ADMINS_ONLY = "The server's usage is for people with the Manage Server permission."
_MESSAGE_LIMIT = 2000
_PER = {Period.DAY: "a day", Period.WEEK: "a week", Period.MONTH: "a month"}


class BudgetsCog(commands.Cog):
    budget_group = admin_group("budget", "Cap what each person and the whole server may spend.")

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets

    @budget_group.command(name="set", description="Set a cap on tokens and images.")
    @app_commands.describe(
        scope="For each person (of a role, or one member), or the whole server's total",
        tokens="Tokens (prompt plus answer) allowed in the period; leave out for no cap",
        images="Images made or edited allowed in the period; leave out for no cap",
        period="day (the default), week or month, in UTC",
        role="Only for members of this role (the most generous of a member's roles applies)",
        user="Only for this member (wins over their roles)",
    )
    async def set_(
        self,
        interaction: discord.Interaction,
        scope: BudgetScope,
        tokens: app_commands.Range[int, 0, 10**12] | None = None,
        images: app_commands.Range[int, 0, 10**6] | None = None,
        period: Period = Period.DAY,
        role: discord.Role | None = None,
        user: discord.User | None = None,
    ) -> None:
        guild_id = _admin_guild(interaction)
        rule = _rule(scope, period, tokens, images, role, user)
        if tokens is None and images is None:
            raise UserError("Give tokens, images or both: what the budget caps.")
        await interaction.response.defer(ephemeral=True)
        await self.budgets.set(guild_id, rule, by=interaction.user.id)
        await _reply(interaction, f"✅ {_described(rule)}")

    @budget_group.command(name="show", description="Every budget here, and how much is used.")
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = _admin_guild(interaction)
        await interaction.response.defer(ephemeral=True)
        uses = await self.budgets.overview(guild_id)
        if not uses:
            await _reply(
                interaction,
                "No budgets here: people use the bot without a cap. `/budget set` adds one.",
            )
            return
        await _reply(interaction, "\n".join(_rule_line(use) for use in uses))

    @budget_group.command(name="clear", description="Remove a budget.")
    @app_commands.describe(
        scope="The budget for each person (or a role's, or a member's), or the server's",
        role="The role's budget",
        user="The member's budget",
    )
    async def clear(
        self,
        interaction: discord.Interaction,
        scope: BudgetScope,
        role: discord.Role | None = None,
        user: discord.User | None = None,
    ) -> None:
        guild_id = _admin_guild(interaction)
        rule = _rule(scope, Period.DAY, None, None, role, user)
        await interaction.response.defer(ephemeral=True)
        if await self.budgets.clear(guild_id, rule):
            await _reply(interaction, f"🗑️ Removed the budget for {_whom(rule)}.")
        else:
            await _reply(interaction, f"There was no budget for {_whom(rule)}.")

    @app_commands.command(name="usage", description="What you have used, against your caps.")
    @app_commands.describe(
        server="The whole server's use instead (Manage Server)",
        export="Attach this period's usage records as CSV (Manage Server)",
    )
    @app_commands.guild_only()
    async def usage(
        self, interaction: discord.Interaction, server: bool = False, export: bool = False
    ) -> None:
        guild = interaction.guild
        assert guild is not None
        if (server or export) and not is_admin(interaction.permissions):
            raise UserError(SERVER_VIEW_ADMINS_ONLY)
        await interaction.response.defer(ephemeral=True)
        user = interaction.user
        if server:
            view = await self.budgets.server_view(guild.id)
            title = f"{guild.name}: the last 30 days"
        else:
            roles = frozenset(r.id for r in getattr(user, "roles", []) if not r.is_default())
            view = await self.budgets.view(guild.id, user.id, roles)
            title = f"{user.display_name}: the last 30 days"
        today = self.budgets.now().date()
        chart = await asyncio.to_thread(chart_png, view.days, today=today, title=title)
        files = [discord.File(io.BytesIO(chart), filename="usage.png")]
        text = _usage_text(view, server=server)
        if export:
            # The server's records, over the server's period.
            since = view.since if server else (await self.budgets.server_view(guild.id)).since
            records = await self.budgets.records_since(guild.id, since)
            csv = await asyncio.to_thread(records_csv, records)
            room = interaction.filesize_limit - len(chart)
            name = f"usage-since-{since}.csv"
            attached = await asyncio.to_thread(fitted, csv, name, room)
            if attached is None:
                text += (
                    f"\nThe {len(records):,} records of this period are too many to attach, "
                    "even compressed."
                )
            else:
                files.append(discord.File(io.BytesIO(attached[0]), filename=attached[1]))
        await interaction.edit_original_response(
            content=_clipped(text), attachments=files, allowed_mentions=NO_MENTIONS
        )


def _admin_guild(interaction: discord.Interaction) -> int:
    return require_admin(interaction, ADMINS_ONLY).id


def _rule(
    scope: BudgetScope,
    period: Period,
    tokens: int | None,
    images: int | None,
    role: discord.Role | None,
    user: discord.User | None,
) -> BudgetRule:
    if scope is BudgetScope.SERVER and (role or user):
        raise UserError("A server budget is the whole server's: leave out role and user.")
    if role and user:
        raise UserError("Give a role or a member, not both.")
    role_id = role.id if role and not role.is_default() else 0  # @everyone: every person
    return BudgetRule(scope, period, tokens, images, role_id, user.id if user else 0)


def _whom(rule: BudgetRule) -> str:
    if rule.scope is BudgetScope.SERVER:
        return "the whole server"
    if rule.user_id:
        return f"<@{rule.user_id}>"
    if rule.role_id:
        return f"each member of <@&{rule.role_id}>"
    return "each person"


def _allowed(rule: BudgetRule) -> str:
    caps = [
        f"{limit:,} {what}"
        for what, limit in (("tokens", rule.tokens), ("images", rule.images))
        if limit is not None
    ]
    uncapped = [
        what for what, limit in (("tokens", rule.tokens), ("images", rule.images)) if limit is None
    ]
    text = " and ".join(caps) + f" {_PER[rule.period]}"
    return text + (f" (no cap on {uncapped[0]})" if uncapped else "")


def _described(rule: BudgetRule) -> str:
    return f"{_whom(rule)[0].upper()}{_whom(rule)[1:]} may use {_allowed(rule)}."


def _rule_line(use: RuleUse) -> str:
    line = f"• {_whom(use.rule)}: {_allowed(use.rule)}"
    if use.used is not None:
        line += f"; used {SPOKEN[use.rule.period]}: {_spent(use.used)}"
    return line


def _spent(spent: Spent) -> str:
    return f"{spent.tokens:,} tokens, {spent.images:,} images"


def _cap_line(use: CapUse) -> str:
    cap = use.cap
    whose = "The server" if cap.subject == 0 else "You"
    return (
        f"• {whose}: {use.used:,} of {cap.limit:,} {cap.dimension.value} "
        f"{SPOKEN[cap.period]}, more <t:{int(use.resets_at.timestamp())}:R>"
    )


def _usage_text(view: UsageView, *, server: bool) -> str:
    lines = [_cap_line(use) for use in view.caps] or [
        "No budget caps the server." if server else "No budget caps what you may use here."
    ]
    lines.append(f"Since {view.since:%B %-d}: {_spent(view.spent)}.")
    if server and view.top_people:
        lines.append("**Who used the most**")
        lines += [f"• <@{user}>: {_spent(spent)}" for user, spent in view.top_people]
    if server and view.by_model:
        lines.append("**By model**")
        lines += [f"• {model}: {_spent(spent)}" for model, spent in view.by_model.items()]
    return "\n".join(lines)


def _clipped(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


async def _reply(interaction: discord.Interaction, text: str) -> None:
    await interaction.edit_original_response(content=_clipped(text), allowed_mentions=NO_MENTIONS)
