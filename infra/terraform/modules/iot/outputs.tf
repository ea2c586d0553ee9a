output "topic_rule_name" {
  description = "Name of the topic rule (CloudWatch dimension RuleName)"
  value       = aws_iot_topic_rule.meters_to_msk.name
}

output "topic_rule_arn" {
  description = "ARN of the topic rule"
  value       = aws_iot_topic_rule.meters_to_msk.arn
}
