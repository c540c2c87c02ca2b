"""The evaluation stage: schedule evaluator, reports, and metrics/ (FID/KID, Inception, domain, fidelity)."""

from .evaluator import METRICS, FeatureSpace, ScheduleEvaluator, balanced_labels, evaluate_schedule, write_report
from . import metrics

__all__ = ['METRICS', 'FeatureSpace', 'ScheduleEvaluator', 'balanced_labels', 'evaluate_schedule', 'write_report',
           'metrics']
