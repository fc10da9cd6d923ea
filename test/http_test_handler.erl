%% An inets httpd module for http_SUITE. Routes, by request URI:
%%   /status/Code   answers Code with the body "status Code"
%%   .../slow/Ms    waits Ms milliseconds, then answers 200 "slow" (under any prefix)
%%   /redirect      answers 302 with a location header
%%   anything else  answers 200 with term_to_binary of what was received:
%%                  #{method, uri, headers, body, peer_port, client_cert, tls_version}
-module(http_test_handler).
-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{request_uri = "/status/" ++ Code}) ->
    respond(list_to_integer(Code), [], ["status ", Code]);
do(#mod{request_uri = "/redirect"}) ->
    respond(302, [{"location", "/status/200"}], <<"moved">>);
do(Mod = #mod{request_uri = Uri}) ->
    case string:split(Uri, "/slow/") of
        [_, Rest] ->
            {Ms, _} = string:to_integer(Rest),
            timer:sleep(Ms),
            respond(200, [], <<"slow">>);
        [_] ->
            echo(Mod)
    end.

echo(#mod{method = Method, request_uri = Uri, parsed_header = Headers, entity_body = Body,
        socket_type = Type, socket = Socket}) ->
    {PeerPort, _} = httpd_socket:peername(Type, Socket),
    Echo = #{method => Method,
             uri => Uri,
             headers => Headers,
             body => iolist_to_binary(Body),
             peer_port => PeerPort,
             client_cert => client_cert(Type, Socket),
             tls_version => tls_version(Type, Socket)},
    respond(200, [{"x-echo", "yes"}], term_to_binary(Echo)).

respond(Code, Extra, Body) ->
    Head = [{code, Code},
            {content_type, "application/octet-stream"},
            {content_length, integer_to_list(iolist_size(Body))} | Extra],
    {proceed, [{response, {response, Head, Body}}]}.

client_cert(ip_comm, _) -> false;
client_cert(_, Socket) -> element(1, ssl:peercert(Socket)) =:= ok.

tls_version(ip_comm, _) -> none;
tls_version(_, Socket) ->
    case ssl:connection_information(Socket, [protocol]) of
        {ok, [{protocol, P}]} -> P;
        _ -> unknown
    end.
