"""``sfn_wasm_guest.aws`` against a stub of the network: botocore's names on the wire."""

import json
import sys
import unittest
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sfn_wasm_guest import TaskFailure, aws, http  # noqa: E402


class JsonProtocol(unittest.TestCase):
    def test_an_operation_is_its_target_and_its_keywords_the_json(self):
        seen = []

        def sqs(req):
            seen.append(req)
            return http.Response(200, {"content-type": "application/x-amz-json-1.0"}, '{"MessageId": "m-1"}')

        with http.stub(sqs):
            answer = aws.client("sqs", region_name="eu-west-1").send_message(QueueUrl="q", MessageBody="hi")
        self.assertEqual(answer, {"MessageId": "m-1"})
        self.assertEqual(seen[0].url, "https://sqs.eu-west-1.amazonaws.com/")
        self.assertEqual(seen[0].headers["x-amz-target"], "AmazonSQS.SendMessage")
        self.assertEqual(seen[0].headers["content-type"], "application/x-amz-json-1.0")
        self.assertEqual(json.loads(seen[0].body), {"QueueUrl": "q", "MessageBody": "hi"})

    def test_an_error_is_a_client_error_with_awss_code(self):
        def refuse(req):
            body = '{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "no queue"}'
            return http.Response(400, {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}, body)

        with http.stub(refuse):
            with self.assertRaises(aws.ClientError) as raised:
                aws.client("sqs").send_message(QueueUrl="q", MessageBody="hi")
        error = raised.exception.response["Error"]
        self.assertEqual(error["Code"], "AWS.SimpleQueueService.NonExistentQueue")
        self.assertEqual(error["Message"], "no queue")
        self.assertIn("when calling the SendMessage operation", str(raised.exception))
        failure = aws.failure(raised.exception)
        self.assertIsInstance(failure, TaskFailure)

    def test_a_json_error_code_is_read_as_botocore_reads_it(self):
        cases = [
            ({}, '{"__type": "com.amazon.coral.validate#ValidationException:http://x", "message": "m"}', "ValidationException"),
            ({}, '{"code": "ThrottlingException", "message": "m"}', "ThrottlingException"),
            ({"x-amzn-errortype": "ResourceNotFoundException:http://internal.amazon.com/"}, "{}", "ResourceNotFoundException"),
        ]
        for headers, body, code in cases:
            with http.stub(lambda req: http.Response(400, headers, body)):
                with self.assertRaises(aws.ClientError) as raised:
                    aws.client("dynamodb").get_item(TableName="t", Key={})
            self.assertEqual(raised.exception.response["Error"]["Code"], code, body)

    def test_a_success_that_is_not_json_is_a_parser_error(self):
        with http.stub(lambda req: http.Response(200, {}, "<html>proxy</html>")):
            with self.assertRaises(aws.ResponseParserError) as raised:
                aws.client("sqs").send_message(QueueUrl="q", MessageBody="hi")
        self.assertIn("SendMessage", str(raised.exception))
        self.assertEqual(aws.failure(raised.exception).error, "ResponseParserError")

    def test_operation_names_with_acronyms_and_as_the_api_spells_them(self):
        seen = []
        with http.stub(lambda req: seen.append(req) or http.Response(200, {}, "{}")):
            aws.client("sqs").SendMessage(QueueUrl="q", MessageBody="hi")
        self.assertEqual(seen[0].headers["x-amz-target"], "AmazonSQS.SendMessage")
        result = '<R><{0}Result></{0}Result></R>'
        with http.stub(lambda req: seen.append(req) or http.Response(200, {}, result.format("AssumeRoleWithSAML"))):
            aws.client("sts").assume_role_with_saml(RoleArn="r", PrincipalArn="p", SAMLAssertion="a")
        self.assertEqual(parse_qs(seen[1].body.decode())["Action"], ["AssumeRoleWithSAML"])

    def test_step_functions_signs_as_states(self):
        seen = []
        with http.stub(lambda req: seen.append(req) or http.Response(200, {}, "{}")):
            aws.client("stepfunctions").describe_activity(activityArn="a")
        self.assertEqual(seen[0].url, "https://states.us-east-1.amazonaws.com/")
        self.assertEqual(seen[0].headers["x-amz-target"], "AWSStepFunctions.DescribeActivity")


class QueryProtocol(unittest.TestCase):
    def test_parameters_are_flattened_and_the_result_read(self):
        seen = []

        def sns(req):
            seen.append(req)
            return http.Response(
                200,
                {},
                '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
                "<MessageId>m-2</MessageId></PublishResult></PublishResponse>",
            )

        with http.stub(sns):
            answer = aws.client("sns").publish(TopicArn="t", Message="hi", Tags=["a", "b"])
        self.assertEqual(answer, {"MessageId": "m-2"})
        form = parse_qs(seen[0].body.decode())
        self.assertEqual(form["Action"], ["Publish"])
        self.assertEqual(form["Version"], ["2010-03-31"])
        self.assertEqual(form["Tags.member.2"], ["b"])

    def test_snss_maps_are_entries_and_none_is_left_out(self):
        seen = []
        result = '<R><{0}Result></{0}Result></R>'
        with http.stub(lambda req: seen.append(req) or http.Response(200, {}, result.format("Publish"))):
            aws.client("sns").publish(
                TopicArn="t",
                Message="hi",
                Subject=None,
                MessageAttributes={"kind": {"DataType": "String", "StringValue": "greeting"}},
            )
        with http.stub(lambda req: seen.append(req) or http.Response(200, {}, result.format("CreateTopic"))):
            aws.client("sns").create_topic(Name="n", Attributes={"DisplayName": "d"}, Tags=[{"Key": "k", "Value": "v"}])
        publish = parse_qs(seen[0].body.decode())
        self.assertEqual(publish["MessageAttributes.entry.1.Name"], ["kind"])
        self.assertEqual(publish["MessageAttributes.entry.1.Value.DataType"], ["String"])
        self.assertEqual(publish["MessageAttributes.entry.1.Value.StringValue"], ["greeting"])
        self.assertNotIn("Subject", publish)
        create = parse_qs(seen[1].body.decode())
        self.assertEqual(create["Attributes.entry.1.key"], ["DisplayName"])
        self.assertEqual(create["Attributes.entry.1.value"], ["d"])
        self.assertEqual(create["Tags.member.1.Key"], ["k"])


class S3(unittest.TestCase):
    def test_get_put_list_and_errors(self):
        seen = []

        def s3(req):
            seen.append(req)
            if req.method == "PUT":
                return http.Response(200, {"etag": '"e1"'})
            if "list-type=2" in req.url:
                return http.Response(
                    200,
                    {},
                    "<ListBucketResult><KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>"
                    "<Contents><Key>a b.txt</Key><Size>3</Size><ETag>\"e1\"</ETag></Contents></ListBucketResult>",
                )
            if req.url.endswith("/missing"):
                return http.Response(404, {}, "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>")
            return http.Response(200, {"content-type": "text/plain", "x-amz-meta-owner": "me"}, "abc")

        with http.stub(s3):
            client = aws.client("s3")
            self.assertEqual(client.put_object(Bucket="b", Key="a b.txt", Body="abc")["ETag"], '"e1"')
            got = client.get_object(Bucket="b", Key="a b.txt")
            self.assertEqual(list(got["Body"].iter_chunks(2)), [b"ab", b"c"])
            self.assertEqual(got["Metadata"], {"owner": "me"})
            listing = client.list_objects_v2(Bucket="b", Prefix="a")
            self.assertEqual(listing["Contents"][0]["Key"], "a b.txt")
            self.assertEqual(listing["Contents"][0]["Size"], 3)
            with self.assertRaises(aws.ClientError) as raised:
                client.get_object(Bucket="b", Key="missing")
        self.assertEqual(seen[0].url, "https://s3.us-east-1.amazonaws.com/b/a%20b.txt")
        self.assertEqual(seen[2].url, "https://s3.us-east-1.amazonaws.com/b?list-type=2&prefix=a")
        self.assertEqual(raised.exception.response["Error"]["Code"], "NoSuchKey")
        self.assertEqual(aws.failure(raised.exception).error, "NoSuchKey")

    def test_a_head_that_finds_nothing_is_404_and_a_body_is_no_cause(self):
        with http.stub(lambda req: http.Response(404, {}, b"")):
            with self.assertRaises(aws.ClientError) as raised:
                aws.client("s3").head_object(Bucket="b", Key="k")
        self.assertEqual(raised.exception.response["Error"], {"Code": "404", "Message": "Not Found"})
        with http.stub(lambda req: http.Response(502, {}, "<html>Traceback (most recent call last)")):
            with self.assertRaises(aws.ClientError) as raised:
                aws.client("s3").get_object(Bucket="b", Key="k")
        self.assertEqual(raised.exception.response["Error"], {"Code": "502", "Message": "Bad Gateway"})

    def test_a_body_reads_as_botocores(self):
        with http.stub(lambda req: http.Response(200, {}, b"one\ntwo\n")):
            with aws.client("s3").get_object(Bucket="b", Key="k")["Body"] as body:
                self.assertEqual(list(body.iter_lines()), [b"one", b"two"])
            self.assertEqual(body.read(), b"")
            body = aws.client("s3").get_object(Bucket="b", Key="k")["Body"]
            self.assertEqual(b"".join(body), b"one\ntwo\n")

    def test_a_denied_request_fails_with_the_wasi_http_code(self):
        def deny(req):
            raise http.HttpError("HTTP-request-denied", "not granted")

        with http.stub(deny):
            with self.assertRaises(http.HttpError) as raised:
                aws.client("s3").get_object(Bucket="b", Key="k")
        self.assertEqual(aws.failure(raised.exception).error, "HTTP-request-denied")

    def test_what_is_not_supported_says_what_is(self):
        with self.assertRaises(ValueError) as raised:
            aws.client("lambda")
        self.assertIn("sqs", str(raised.exception))
        with self.assertRaises(AttributeError) as raised:
            aws.client("s3").copy_object
        self.assertIn("list_objects_v2", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
