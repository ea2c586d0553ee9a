output "sns_topic_arn" {
  description = "SNS topic every alarm notifies (subscribe the pager here)"
  value       = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  description = "Names of the CloudWatch alarms"
  value       = [for a in aws_cloudwatch_metric_alarm.this : a.alarm_name]
}
