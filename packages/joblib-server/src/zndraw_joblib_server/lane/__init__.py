"""The fast lane: hot endpoints served by compiled plans instead of FastAPI's generic path."""

from zndraw_joblib_server.lane.middleware import FastLane, LaneRoute, lane_routes
from zndraw_joblib_server.lane.plan import Plan, Unsupported, compile_plan

__all__ = ["FastLane", "LaneRoute", "Plan", "Unsupported", "compile_plan", "lane_routes"]
