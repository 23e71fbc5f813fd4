"""Notifications: notifier hub, Telegram and email channels."""
